"""Grid curves read from overrides, the HTML report (escaping, offline, charts), compare, suites."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness.compare import compare_documents
from harness.curves import grid_curves
from report_docs import HOSTILE, attack_grid, metric_record, numeric_grid, run_doc, single
from test_board import run_cli

PY = sys.executable


# ------------------------------------------------------------------------------------------- curves


def test_attack_families_become_curves_against_their_strength():
    doc = attack_grid()
    g = grid_curves(doc["cells"])
    fam = {x.title: x for x in g.groups}
    assert set(fam) == {"attack.jpeg", "attack.rotate"}  # attack.meme has no numeric strength
    (jpeg,) = fam["attack.jpeg"].curves
    assert fam["attack.jpeg"].xlabel == "quality" and jpeg.x == [10.0, 50.0, 80.0] and jpeg.cells == [3, 2, 1]
    assert fam["attack.rotate"].reference == {"": 0}  # attack.none: the reference line
    assert g.single == [0, 6]  # the reference and the meme: on no curve


def test_family_parameters_tied_to_the_strength_do_not_split_it_others_do():
    cells = [{"overrides": {"transform": {"name": "augly.jpeg", "min_quality": q, "max_quality": q}}, "metrics": {}}
             for q in (10, 30, 50)]
    cells += [{"overrides": {"transform": {"name": "attack.rotate", "degrees": d, "interpolation": i}}, "metrics": {}}
              for i in ("nearest", "bilinear") for d in (5, 10)]
    g = {x.title: x for x in grid_curves(cells).groups}
    assert [c.x for c in g["augly.jpeg"].curves] == [[10.0, 30.0, 50.0]]
    assert g["augly.jpeg"].xlabel == "min_quality"
    rot = g["attack.rotate"].curves
    assert [c.label for c in rot] == ['interpolation="nearest"', 'interpolation="bilinear"']
    assert all(c.x == [5.0, 10.0] for c in rot)


def test_numeric_axes_crossed_with_others_give_one_series_per_combination():
    cells = [{"overrides": {"lam": lam, "descriptor": {"name": d}}, "metrics": {}}
             for d in ("gist", "phash") for lam in (0.0, 0.5, 1.0)]
    groups = grid_curves(cells).groups
    (lam,) = [x for x in groups if x.kind == "parameter"]
    assert [c.label for c in lam.curves] == ["descriptor=gist", "descriptor=phash"]
    assert lam.curves[1].cells == [3, 4, 5] and lam.curves[0].x == [0.0, 0.5, 1.0]
    assert not [x for x in groups if x.kind == "family"]  # a descriptor name alone is no strength
    assert grid_curves([{"overrides": {}, "metrics": {}}]).groups == []


# ------------------------------------------------------------------------------------------- report


def parse(html):
    """(tag, attributes) of every element, as a browser's tokenizer sees them."""
    from html.parser import HTMLParser

    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

        handle_startendtag = handle_starttag

    P().feed(html)
    return found


def write_docs(tmp_path, docs):
    paths = []
    for i, d in enumerate(docs):
        p = tmp_path / f"doc{i}.json"
        p.write_text(json.dumps(d))
        paths.append(str(p))
    return paths


def hostile_docs():
    s = single()
    s["task"] = HOSTILE
    s["spec"]["overrides"] = [f"descriptor={HOSTILE}"]
    s["cells"][0]["metrics"][HOSTILE] = s["cells"][0]["metrics"].pop("disc21")
    s["metrics"] = s["cells"][0]["metrics"]
    a = attack_grid()
    a["cells"][6]["overrides"]["transform"]["text"] = HOSTILE
    a["cells"].append({"overrides": {"transform": {"name": HOSTILE, "x": 1}}, "metrics": {"disc21": metric_record(0.1)}})
    a["cells"].append({"overrides": {"transform": {"name": HOSTILE, "x": 2}}, "metrics": {"disc21": metric_record(0.2)}})
    return [s, a, numeric_grid()]


def test_report_escapes_document_strings_and_needs_nothing_outside(tmp_path, capsys):
    paths = write_docs(tmp_path, hostile_docs())
    out = tmp_path / "r.html"
    code, _, err = run_cli(["report", *paths, "-o", str(out)], capsys)
    assert code == 0, err
    html = out.read_text()
    tags = parse(html)
    names = {t for t, _ in tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image", "foreignobject"}, names
    attrs = [(k, v) for _, a in tags for k, v in a]
    assert not [k for k, _ in attrs if k == "src" or k.startswith("on")]  # no loading, no handlers
    assert all((v or "").startswith("#") for k, v in attrs if k in ("href", "xlink:href"))  # internal references only
    assert "@import" not in html and "url(http" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the hostile string shown as text
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    # charts: PR + breakdown (single), PR + robustness + bars (attacks), parameter (numeric)
    kinds = re.findall(r'<figure class="chart" data-chart="([a-z]+)"', html)
    assert sorted(kinds) == sorted(["pr", "breakdown", "pr", "robustness", "cells", "parameter"])
    ids = re.findall(r'<(?:clipPath|path|g)[^>]* id="([^"]+)"', html)
    defs = [i for i in ids if re.fullmatch(r"p[0-9a-f]{6,}|m[0-9a-f]{6,}", i)]
    assert defs and len(defs) == len(set(defs))  # clip-path and marker ids never collide between inline SVGs
    assert out.stat().st_mode & 0o044  # readable by others, as any file the user writes


def test_report_leaderboard_and_suite(tmp_path, capsys):
    paths = write_docs(tmp_path, [single(0.6), single(0.4), attack_grid()])
    db = str(tmp_path / "b.db")
    for name, p in zip(("a", "b"), paths[:2]):
        assert run_cli(["board", "add", db, p, "--name", name], capsys)[0] == 0
    out = tmp_path / "r.html"
    code, _, err = run_cli(["report", *paths, "--board", db, "-o", str(out), "--title", "T"], capsys)
    assert code == 0, err
    html = out.read_text()
    assert 'id="leaderboard"' in html and "<h2>Suite</h2>" in html and "<title>T</title>" in html
    board = html[html.index('id="leaderboard"'):html.index('<section class="doc"')]
    assert board.index("a v1") < board.index("b v1")  # ranked
    assert board.count('data-chart="pr"') == 1  # every submission's curve on one chart
    code, _, err = run_cli(["report", "-o", str(out)], capsys)
    assert code == 2 and "give RESULT" in err
    code, _, err = run_cli(["report", str(tmp_path / "missing.json"), "-o", str(out)], capsys)
    assert code == 2 and "missing.json" in err


def test_harness_help_imports_no_matplotlib():
    code = "import sys, harness.cli; from harness import report, board, compare; print('matplotlib' in sys.modules)"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------------------ compare


def test_compare_gives_deltas_per_cell():
    a, b = attack_grid(), attack_grid()
    b["cells"][1]["metrics"]["disc21"]["values"]["micro_ap"] = 0.71
    res = compare_documents(a, b)
    assert res["problems"] == []
    d = res["cells"][1]["metrics"]["disc21"]["micro_ap"]
    assert d["a"] == 0.61 and d["b"] == 0.71 and d["delta"] == pytest.approx(0.1)
    assert res["cells"][0]["metrics"]["disc21"]["micro_ap"]["delta"] == 0
    assert "pr_curve" not in res["cells"][0]["metrics"]["disc21"]


@pytest.mark.parametrize("change, problem", [
    (lambda d: d["data"].update(fingerprint="other"), "different data"),
    (lambda d: d["cells"][0]["metrics"]["disc21"].update(version="1"), "version 2 vs 1"),
    (lambda d: d["cells"][0]["metrics"]["disc21"].update(protocol="disc21-isc2021"), "protocol"),
    (lambda d: d["cells"][0]["metrics"]["disc21"]["params"].update(scorer="isc2021"), "params"),
    (lambda d: d["cells"].pop(), "different grid: 1 cell(s) only in A"),
    (lambda d: d["cells"][0]["metrics"].pop("disc21"), "metric disc21 only in A"),
])
def test_compare_refuses_what_does_not_compare(tmp_path, capsys, change, problem):
    a, b = attack_grid(), attack_grid()
    change(b)
    assert any(problem in p for p in compare_documents(a, b)["problems"])
    pa, pb = write_docs(tmp_path, [a, b])
    code, _, err = run_cli(["compare", pa, pb], capsys)
    assert code == 2 and "not comparable" in err and problem in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["compare", pa, pb, "--force", "--json"], capsys)
    assert code == 0 and json.loads(out)["problems"]


def test_compare_cli_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    b = single(0.7)
    pa, pb = write_docs(tmp_path, [single(0.6), b])
    code, out, _ = run_cli(["compare", pa, pb], capsys)
    assert code == 0 and "micro_ap" in out and "+0.1" in out


# -------------------------------------------------------------------------------------------- suite


def test_run_several_specs_prints_one_table_and_a_json_list(tmp_path, capsys, monkeypatch):
    import toy_plugins

    monkeypatch.setenv("COLUMNS", "200")
    specs = []
    for i, task in enumerate(("toy-a", "toy-b")):
        p = tmp_path / f"{task}.yaml"
        p.write_text(json.dumps(toy_plugins.spec(str(tmp_path / "data"), task=task)))
        specs.append(str(p))
    monkeypatch.setattr("harness.plugins._CACHED", toy_plugins_registry())  # the CLI sees the toy plugins
    code, out, err = run_cli(["run", *specs, "--output", str(tmp_path / "res"), "-q", "--json"], capsys)
    assert code == 0, err
    docs = json.loads(out)
    assert [d["task"] for d in docs] == ["toy-a", "toy-b"]
    code, out, err = run_cli(["run", *specs, "--output", str(tmp_path / "res"), "-q"], capsys)
    assert code == 0, err
    assert "suite of 2 runs" in out and out.count("toy-a") >= 2 and "toy-b" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: x\nbogus: 1\n")
    n_before = len(list((tmp_path / "res").iterdir()))
    code, _, err = run_cli(["run", specs[0], str(bad), "--output", str(tmp_path / "res"), "-q"], capsys)
    assert code == 2 and "bad.yaml" in err
    assert len(list((tmp_path / "res").iterdir())) == n_before  # validated before anything ran


def toy_plugins_registry():
    import toy_plugins

    from harness.testing import registry_with

    return registry_with(toy_plugins)


def test_report_reads_a_suite_list_as_run_prints_it(tmp_path, capsys):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([single(), attack_grid()]))
    out = tmp_path / "r.html"
    code, _, err = run_cli(["report", str(suite), "-o", str(out)], capsys)
    assert code == 0, err
    assert out.read_text().count('<section class="doc"') == 2
    suite.write_text(json.dumps([single(), {"task": "x"}]))
    code, _, err = run_cli(["report", str(suite), "-o", str(out)], capsys)
    assert code == 2 and "suite.json[1]: not a result document" in err


def test_each_series_finds_its_own_reference_cell():
    cells = [{"overrides": {"watermarker": {"name": w}, "attack": [{"name": n, **p}]}, "metrics": {}}
             for w in ("dwt_dct", "rivagan") for n, p in (("attack.none", {}), ("attack.jpeg", {"quality": 90}),
                                                           ("attack.jpeg", {"quality": 50}))]
    (jpeg,) = [g for g in grid_curves(cells).groups if g.kind == "family"]
    assert [c.label for c in jpeg.curves] == ["watermarker=dwt_dct", "watermarker=rivagan"]
    assert [jpeg.reference[c.other] for c in jpeg.curves] == [0, 3]
    assert [c.cells for c in jpeg.curves] == [[2, 1], [5, 4]]


def test_report_work_is_bounded_by_caps_not_by_the_document(tmp_path):
    from harness.report import MAX_BARS, write_report

    big = [{"overrides": {"descriptor": {"name": f"d{i}"}}, "metrics": {"disc21": metric_record(i / 500)}}
           for i in range(500)]
    big[0]["metrics"]["disc21"]["values"]["pr_curve"] = [[i / 5000, 1 - i / 5000] for i in range(1, 5001)]
    out = tmp_path / "r.html"
    size = write_report(out, [("big.json", run_doc(big))])
    html = out.read_text()
    assert f"The first {MAX_BARS} of 500 are drawn" in html and "The first 16 of 500 are drawn" in html
    assert size < 1_000_000


def test_schema_1_documents_report_and_compare(tmp_path, capsys):
    old = single(0.5)
    old["schema_version"] = 1
    del old["cells"]
    new = single(0.6)
    pa, pb = write_docs(tmp_path, [old, new])
    assert run_cli(["report", pa, "-o", str(tmp_path / "r.html")], capsys)[0] == 0
    assert 'data-chart="pr"' in (tmp_path / "r.html").read_text()
    code, out, _ = run_cli(["compare", pa, pb, "--json"], capsys)
    assert code == 0 and json.loads(out)["cells"][0]["metrics"]["disc21"]["micro_ap"]["delta"] == pytest.approx(0.1)
