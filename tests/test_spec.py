"""Spec validation: every problem reported together, with file:line and did-you-mean."""

from __future__ import annotations

import textwrap

import pytest

from harness.errors import SpecError, UserError
from harness.spec import load_spec, parse_path


def write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GOOD = """
task: toy
dataset: {name: toy, root: /tmp/x}
descriptor: {name: mean_color_toy, grid: 4}
postprocess:
  - name: center
index: {name: brute, k: 3}
metrics:
  - {name: recall_at, k: 1}
"""


def test_valid_spec_loads(tmp_path, toy_registry):
    spec = load_spec(write(tmp_path, GOOD), registry=toy_registry)
    assert spec.task == "toy"
    assert spec.descriptor.params == {"grid": 4}
    assert spec.index.params == {"k": 3}
    assert spec.metrics[0].path == "metrics[0]"
    assert len(spec.hash) == 64


def test_all_problems_reported_with_lines_and_suggestions(tmp_path, toy_registry):
    path = write(tmp_path, """
        task: toy
        dataset: {name: toy, root: /tmp/x}
        descriptr: {name: mean_color_toy}
        index: {name: brute, kk: 3}
        postprocess:
          - name: centre
        metrics:
          - name: recall_at
            k: "one"
        seed: abc
        """)
    with pytest.raises(SpecError) as info:
        load_spec(path, registry=toy_registry)
    lines = [str(i) for i in info.value.issues]
    text = "\n".join(lines)
    assert f"{path}:3: descriptr: unknown key (did you mean 'descriptor'?)" in lines
    assert "missing required key 'descriptor'" in text
    assert f"{path}:4: index.kk: index 'brute': parameter 'kk': unknown parameter (did you mean 'k'?)" in lines
    assert any(l.startswith(f"{path}:6: postprocess[0].name: unknown postprocessor 'centre'") and "did you mean 'center'" in l for l in lines)
    assert any(l.startswith(f"{path}:9: metrics[0].k:") and "valid integer" in l for l in lines)
    assert any(l.startswith(f"{path}:10: seed: expected an integer") for l in lines)
    assert len(lines) == 6


def test_invalid_choice_suggests_the_closest(tmp_path, toy_registry):
    import toy_plugins

    path = write(tmp_path, GOOD.replace("{name: mean_color_toy, grid: 4}", "{name: mean_color_toy, symmetric: maybe}"))
    with pytest.raises(SpecError) as info:
        load_spec(path, registry=toy_registry)
    assert "descriptor.symmetric" in str(info.value)
    del toy_plugins


def test_missing_required_param_and_wrong_shapes(tmp_path, toy_registry):
    path = write(tmp_path, """
        task: "bad name!"
        dataset: {name: toy}
        descriptor: mean_color_toy
        index: [brute]
        metrics: []
        extraction: {batch_size: 0, wrokers: 2}
        """)
    with pytest.raises(SpecError) as info:
        load_spec(path, registry=toy_registry)
    text = str(info.value)
    assert f"{path}:2: dataset: dataset 'toy': parameter 'root': missing required parameter" in text
    assert "index: expected a mapping" in text
    assert "metrics: at least one metric is required" in text
    assert "task names use letters" in text
    assert "extraction.batch_size: expected an integer from 1 to 65,536" in text
    assert "extraction.wrokers: unknown key (did you mean 'workers'?)" in text


def test_duplicate_keys_and_yaml_syntax(tmp_path, toy_registry):
    path = write(tmp_path, GOOD + "task: again\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, registry=toy_registry)
    assert f"{path}:9: task: duplicate key (first at line 1)" in str(info.value)
    bad = write(tmp_path, "task: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad, registry=toy_registry)
    assert str(info.value).startswith(f"{bad}:") and "invalid YAML" in str(info.value)


def test_set_overrides_replace_nodes_and_locate_errors(tmp_path, toy_registry):
    path = write(tmp_path, GOOD)
    spec = load_spec(path, ["descriptor={name: mean_color_toy, grid: 8}", "metrics[0].k=5", "seed=7"], toy_registry)
    assert spec.descriptor.params == {"grid": 8}
    assert spec.metrics[0].params == {"k": 5}
    assert spec.seed == 7
    assert spec.data["descriptor"] == {"name": "mean_color_toy", "grid": 8}
    with pytest.raises(SpecError) as info:
        load_spec(path, ["descriptor={name: mean_colour_toy}"], toy_registry)
    assert str(info.value).startswith("--set descriptor: descriptor.name: unknown descriptor 'mean_colour_toy'")
    assert "did you mean 'mean_color_toy'" in str(info.value)
    with pytest.raises(UserError, match="expected PATH=YAML"):
        load_spec(path, ["descriptor"], toy_registry)
    with pytest.raises(UserError, match="out of range"):
        load_spec(path, ["metrics[3].k=1"], toy_registry)
    spec = load_spec(path, ["metrics[1]={name: recall_at, k: 2}"], toy_registry)  # index == len appends
    assert [m.params["k"] for m in spec.metrics] == [1, 2]


def test_parse_path():
    assert parse_path("metrics[0].scorer") == ("metrics", 0, "scorer")
    assert parse_path("metrics.0.scorer") == ("metrics", 0, "scorer")
    assert parse_path("index.search.k") == ("index", "search", "k")


def test_home_is_expanded(tmp_path, toy_registry, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_spec(write(tmp_path, GOOD.replace("/tmp/x", "~/data")), registry=toy_registry)
    assert spec.dataset.params["root"] == str(tmp_path / "data")


def test_missing_file(tmp_path, toy_registry):
    with pytest.raises(UserError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml", registry=toy_registry)


def test_recursive_alias_is_an_issue_not_a_crash(tmp_path, toy_registry):
    path = write(tmp_path, GOOD + "extraction: &x [*x]\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, registry=toy_registry)
    assert str(info.value) == f"{path}:9: extraction[0]: recursive YAML alias"


def test_quoted_numbers_are_not_coerced(tmp_path, toy_registry):
    path = write(tmp_path, GOOD.replace("index: {name: brute, k: 3}", "index: {name: brute, k: '3'}"))
    with pytest.raises(SpecError, match="index.k"):
        load_spec(path, registry=toy_registry)


def test_floats_without_a_dot_read_as_numbers_as_in_yaml_1_2():
    from harness.safe_yaml import load_value

    assert load_value("{a: 1e-6, b: -2E+3, c: 1.5e-3, d: +3e0}", "s") == {"a": 1e-6, "b": -2000.0, "c": 1.5e-3, "d": 3.0}
    # what is not a YAML 1.2 float stays as before: ints, quoted text, other words
    assert load_value("{a: 12, b: '1e-6', c: 1e5x, d: e5, e: 0x10}", "s") == {"a": 12, "b": "1e-6", "c": "1e5x", "d": "e5", "e": 16}
