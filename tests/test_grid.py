"""Grids, chains, nested parts and cache keys at the right grain (core v2), on the toy plugin."""

from __future__ import annotations

import dataclasses
import types

import pytest
import yaml

import harness
import toy_plugins
from harness.errors import SpecError
from harness.runner import run_spec
from harness.spec import load_spec
from harness.testing import registry_with

MIRROR = {"name": "mirror", "p": 1.0}


def _write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(tmp_path, registry, spec, overrides=(), cache="cache"):
    doc, _ = run_spec(str(_write(tmp_path, spec)), list(overrides), cache_dir=str(tmp_path / cache),
                      output_dir=str(tmp_path / "results"), registry=registry)
    return doc


def _records(doc, name):
    return [s for s in doc["stages"] if s["stage"].split("#")[0] == name]


def test_three_cell_transform_grid_describes_the_database_once(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": [MIRROR, {"name": "mirror", "p": 0.0},
                                                                        {"name": "mirror", "p": 0.5}]}])
    doc = _run(tmp_path, toy_registry, spec)
    assert doc["schema_version"] == 2 and len(doc["cells"]) == 3 and "metrics" not in doc
    for role in ("database", "train"):
        (record,) = _records(doc, f"describe:{role}")  # one stage, shared by every cell
        assert record["status"] == "computed" and record["cells"] == [0, 1, 2]
    (fit,) = _records(doc, "postprocess:fit")
    assert fit["cells"] == [0, 1, 2]
    (db,) = _records(doc, "postprocess:database")
    assert db["cells"] == [0, 1, 2]
    assert len(_records(doc, "describe:queries")) == 3 and len(_records(doc, "search")) == 3
    keys = [s["key"] for s in doc["stages"]]
    assert len(keys) == len(set(keys)), "each stage is listed once"
    assert [c["overrides"] for c in doc["cells"]] == [{"transform": t} for t in spec["grid"][0]["transform"]]


def test_grid_cells_equal_separate_runs(tmp_path, toy_registry):
    cells = [MIRROR, {"name": "mirror", "p": 0.0}]
    grid = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": cells}]))
    for i, t in enumerate(cells):
        alone = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "data"), transform=t), cache=f"c{i}")
        assert grid["cells"][i]["metrics"] == alone["metrics"]


def test_axes_are_crossed_and_paths_in_an_axis_zipped(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[
        {"transform": [MIRROR, {"name": "mirror", "p": 0.0}], "seed": [1, 2]},
        {"index.k": [2, 3, 4]},
    ])
    s = load_spec(_write(tmp_path, spec), registry=toy_registry)
    got = [(c.overrides["transform"]["p"], c.seed, c.values["index"].params["k"]) for c in s.cells]
    assert got == [(1.0, 1, 2), (1.0, 1, 3), (1.0, 1, 4), (0.0, 2, 2), (0.0, 2, 3), (0.0, 2, 4)]


def test_cell_errors_name_the_cell_and_every_cell_is_validated(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[{"index.k": [2, "three", 4, "five"]}])
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, spec), registry=toy_registry)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "grid[0] value 1: index.k:" in lines[0] and "'three'" in lines[0]
    assert "grid[0] value 3: index.k:" in lines[1]


def test_grid_shape_errors(tmp_path, toy_registry):
    for grid, message in [
        ([{"transform": [MIRROR], "seed": [1, 2]}], "equal lengths"),
        ([{"transform": []}], "non-empty list"),
        ({"transform": [MIRROR]}, "list of axes"),
        ([{"task": ["a", "b"]}], "cannot vary"),
        ([{"descriptr": [{"name": "mean_color_toy"}]}], "unknown key"),
    ]:
        with pytest.raises(SpecError, match=message):
            load_spec(_write(tmp_path, toy_plugins.spec(str(tmp_path / "data"), grid=grid)), registry=toy_registry)


def test_chain_prefixes_are_shared_stages(tmp_path, toy_registry):
    long = [MIRROR, {"name": "mirror", "p": 0.5}]
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": [[MIRROR], long]}])
    doc = _run(tmp_path, toy_registry, spec)
    queries = _records(doc, "queries")
    assert len(queries) == 2
    assert queries[0]["cells"] == [0, 1] and queries[1]["cells"] == [1]
    # a chain of one equals the single transform (same stage key as `transform: {mirror}`)
    single = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "data"), transform=MIRROR))
    assert _records(single, "queries")[0]["key"] == queries[0]["key"]
    assert _records(single, "queries")[0]["status"] == "cached"


def test_a_different_query_subset_keeps_the_database_descriptors(tmp_path, toy_registry):
    _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "a")))
    # other root, fewer queries: the database files are the same (id, size), so describe:database is shared
    doc = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "b"), dataset={"name": "toy", "root": str(tmp_path / "b"), "n_queries": 4}))
    st = {s["stage"]: s["status"] for s in doc["stages"]}
    assert st["describe:database"] == "cached"
    assert st["describe:queries"] == st["search"] == "computed"
    assert doc["data"]["counts"]["queries"] == 4


def test_query_side_changes_keep_the_whole_database_side_cached(tmp_path, toy_registry):
    _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "a")))
    doc = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "a"), transform=MIRROR))
    st = {s["stage"]: s["status"] for s in doc["stages"]}
    assert st["describe:database"] == st["describe:train"] == st["postprocess:fit"] == "cached"
    assert st["postprocess:database"] == "cached"
    assert st["queries"] == st["describe:queries"] == st["postprocess:queries"] == st["search"] == "computed"


def test_part_identity_uses_the_part_version_not_the_package_version(tmp_path, toy_registry):
    first = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "data")))
    released = registry_with(toy_plugins)
    for kind, parts in released.parts.items():
        for name, part in parts.items():
            parts[name] = dataclasses.replace(part, package_version="99.0")
    second = _run(tmp_path, released, toy_plugins.spec(str(tmp_path / "data")))
    assert {s["stage"]: s["key"] for s in first["stages"]} == {s["stage"]: s["key"] for s in second["stages"]}
    assert second["stages"][-1]["status"] == "cached"
    # a part without its own version is keyed by its package's version
    del toy_plugins.RecallAt.version
    try:
        third = _run(tmp_path, released, toy_plugins.spec(str(tmp_path / "data")))
    finally:
        toy_plugins.RecallAt.version = "1"
    assert {s["stage"]: s["status"] for s in third["stages"]}["metric:recall_at[k=1]"] == "computed"


# -- nested parts ------------------------------------------------------------------------------------

class Holder:
    """A dataset wrapper whose queries pass through a nested transform part."""

    version = "1"

    def __init__(self, inner: harness.params.PartParam("dataset"), jitter: harness.params.PartParam("transform") = None) -> None:
        self.inner, self.jitter = inner, jitter

    def prepare(self, progress=None):
        self.inner.prepare(progress)

    def items(self, role):
        return self.inner.items(role)

    def ground_truth(self):
        return self.inner.ground_truth()

    def fingerprint(self):
        return self.inner.fingerprint() + str(getattr(self.jitter, "harness_spec", None))


@harness.hookimpl
def register_datasets(register):
    register("holder", Holder)


def test_nested_parts_are_validated_recursively_created_and_keyed(tmp_path):
    import harness.params  # noqa: F401

    module = types.ModuleType("nested_plugin")
    module.register_datasets = register_datasets
    registry = registry_with(toy_plugins, module)
    inner = {"name": "toy", "root": str(tmp_path / "data")}
    bad = toy_plugins.spec(str(tmp_path / "data"), dataset={"name": "holder", "inner": {"name": "toi", "root": "x"},
                                                             "jitter": {"name": "mirror", "q": 1}})
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, bad), registry=registry)
    text = str(info.value)
    assert "spec.yaml:" in text and "dataset.inner.name: unknown dataset 'toi' (did you mean 'toy'?)" in text
    assert "dataset.jitter.q: transform 'mirror': parameter 'q': unknown parameter" in text
    good = toy_plugins.spec(str(tmp_path / "data"), dataset={"name": "holder", "inner": inner, "jitter": MIRROR})
    doc = _run(tmp_path, registry, good)
    assert doc["metrics"]["recall_at[k=1]"]["values"]["recall@1"] == 1.0
    assert {"dataset:holder", "dataset:toy", "transform:mirror"} <= {p["part"] for p in doc["plugins"]}
    other = toy_plugins.spec(str(tmp_path / "data"), dataset={"name": "holder", "inner": inner,
                                                               "jitter": {"name": "mirror", "p": 0.0}})
    doc2 = _run(tmp_path, registry, other)
    st = {s["stage"]: s["status"] for s in doc2["stages"]}
    assert st["metric:recall_at[k=1]"] == "computed", "the nested part's identity is in the metric key"
    assert st["describe:database"] == "cached", "but not in the keys of stages it cannot change"


def test_metric_taking_another_input_type_is_a_spec_error(tmp_path):
    class Detector:
        """Takes watermark detections."""

        version = "1"
        protocol = "x"
        input_type = "detections"

        def __call__(self, gt, detections):
            return {}

    module = types.ModuleType("det_plugin")

    @harness.hookimpl
    def register_metrics(register):
        register("detector", Detector)

    module.register_metrics = register_metrics
    registry = registry_with(toy_plugins, module)
    spec = toy_plugins.spec(str(tmp_path / "data"), metrics=[{"name": "recall_at"}, {"name": "detector"}])
    with pytest.raises(SpecError, match=r"metrics\[1\]: metric 'detector' takes 'detections' input; the 'retrieval' "
                                        r"pipeline produces 'retrieval'"):
        load_spec(_write(tmp_path, spec), registry=registry)


def test_unknown_pipeline_is_a_spec_error_with_a_suggestion(tmp_path, toy_registry):
    with pytest.raises(SpecError, match=r"pipeline: unknown pipeline 'retrival' \(did you mean 'retrieval'\?\)"):
        load_spec(_write(tmp_path, toy_plugins.spec(str(tmp_path / "d"), pipeline="retrival")), registry=toy_registry)


def test_a_grid_axis_can_take_its_values_from_a_published_grid_file(tmp_path, toy_registry):
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "g.yaml").write_text(yaml.safe_dump({"grid": [{"attack": [MIRROR, {"name": "mirror", "p": 0.0}]}]}))
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": {"values_from": "grids/g.yaml"}}])
    s = load_spec(_write(tmp_path, spec), registry=toy_registry)
    assert [c.overrides["transform"]["p"] for c in s.cells] == [1.0, 0.0]
    assert s.data["grid"][0]["transform"] == [MIRROR, {"name": "mirror", "p": 0.0}]  # the values, in the document
    bad = toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": {"values_from": "grids/missing.yaml"}}])
    with pytest.raises(SpecError, match="values_from: .*missing.yaml: spec file not found"):
        load_spec(_write(tmp_path, bad), registry=toy_registry)


def test_published_grid_files_serve_the_retrieval_pipeline(tmp_path):
    from pathlib import Path

    import harness_plugins.attacks as attacks

    grid_file = Path(__file__).resolve().parents[1] / "specs" / "grids" / "ssl-watermarking.yaml"
    spec = toy_plugins.spec(str(tmp_path / "data"), grid=[{"transform": {"values_from": str(grid_file)}}])
    s = load_spec(_write(tmp_path, spec), registry=registry_with(toy_plugins, attacks))
    assert len(s.cells) == 66 and s.cells[5].overrides["transform"]["name"] == "attack.rotate"


def test_field_check_reports_a_plain_options_problems_with_their_lines_per_cell(tmp_path):
    from harness.parts import Field

    def check(value):
        if not isinstance(value, dict):
            yield (), "expected a mapping", None
            return
        for key, v in value.items():
            if key != "level":
                yield (key,), "unknown option", "level" if key.startswith("lev") else None
            elif not isinstance(v, int) or v < 0:
                yield (key,), f"expected an integer >= 0, got {v!r}", None

    class Options:
        """A pipeline with a checked mapping option."""

        version = "1"
        fields = {"options": Field("mapping", check=check), "metrics": Field("parts", "metric")}
        roles = ()
        metric_input = "retrieval"

        def build(self, cell, ctx):
            return {}

    plugin = types.ModuleType("options_plugin")
    plugin.register_pipelines = harness.hookimpl(lambda register: register("options", Options))
    registry = registry_with(plugin)
    text = "task: t\npipeline: options\noptions:\n  level: 1\ngrid:\n  - options: [{level: 2}, {levle: 3}, {level: -1}]\n"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(str(path), [], registry)
    issues = [str(i) for i in info.value.issues]
    assert len(issues) == 2, issues
    assert any("spec.yaml:6 grid[0] value 1" in i and "options.levle: unknown option" in i and "level" in i for i in issues)
    assert any("grid[0] value 2" in i and "options.level: expected an integer >= 0, got -1" in i for i in issues)
    ok = load_spec(str(path), ["grid=[{options: [{level: 2}, {level: 0}]}]"], registry)
    assert [c.options for c in ok.cells] == [{"level": 2}, {"level": 0}]
