"""The command line: fast start without torch, one-line errors with exit code 2, --json documents."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from harness.cli import cli, main

PY = sys.executable


def _imports_after(args: list[str]) -> set[str]:
    """Run the CLI in a fresh interpreter and report which heavy modules got imported."""
    code = textwrap.dedent(
        f"""
        import sys
        from harness.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        heavy = [m for m in ("torch", "faiss", "timm", "augly", "h5py", "skimage") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy), file=sys.stderr)
        """
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    line = [l for l in out.stderr.splitlines() if l.startswith("HEAVY=")][-1]
    return {m for m in line[len("HEAVY="):].split(",") if m}


def test_help_plugins_and_validate_import_no_heavy_library(tmp_path):
    assert _imports_after(["--help"]) == set()
    assert _imports_after(["plugins", "--json"]) == set()
    for kind in ("descriptor", "index", "metric", "transform", "dataset", "postprocessor", "scorer"):
        assert _imports_after(["list", kind]) == set(), kind
    spec = tmp_path / "s.yaml"
    spec.write_text("task: t\ndataset: {name: disc21, root: /nowhere}\ndescriptor: {name: gist}\n"
                    "index: {name: faiss}\nmetrics: [{name: disc21}]\n")
    assert _imports_after(["validate", str(spec)]) == set()


def test_validate_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("task: t\ndataset: {name: disc21, root: /nowhere}\ndescriptor: {name: gist}\n"
                    "index: {name: faiss}\nmetrics: [{name: disc21}]\n")
    ok = subprocess.run([PY, "-m", "harness", "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("gist", "gits"))
    res = subprocess.run([PY, "-m", "harness", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: {bad}:3: descriptor.name: unknown descriptor 'gits' (did you mean 'gist'?)")
    assert "Traceback" not in res.stderr


def test_user_errors_are_one_line_and_debug_shows_traceback(tmp_path):
    res = subprocess.run([PY, "-m", "harness", "run", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.yaml'}: spec file not found"]
    res = subprocess.run([PY, "-m", "harness", "run", str(tmp_path / "missing.yaml"), "--debug"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_bad_option_exits_2():
    res = subprocess.run([PY, "-m", "harness", "list", "gadget"], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "error: harness list: invalid value for 'KIND': 'gadget' is not one of 'pipeline', 'dataset', 'transform', "
        "'descriptor', 'postprocessor', 'index', 'watermarker', 'composer', 'metric', 'scorer' (see 'harness list --help')"]


def test_plugins_json_lists_builtins():
    res = CliRunner().invoke(cli, ["plugins", "--json"])
    assert res.exit_code == 0, res.output
    listing = {p["name"]: p for p in json.loads(res.output)}
    assert listing["disc21"]["package"] == "harness"
    assert "disc21" in listing["disc21"]["parts"].get("metric", [])
    assert "faiss" in listing["faiss"]["parts"].get("index", [])


def test_list_shows_parameters():
    res = CliRunner().invoke(cli, ["list", "index"])
    assert res.exit_code == 0
    assert "faiss" in res.output and "factory" in res.output


def test_env_json():
    res = CliRunner().invoke(cli, ["env", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["cpu_count"] >= 1 and "cuda_available" in info and info["packages"]["numpy"]


def test_score_rejects_unsupported_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", "roxford5k", str(tmp_path / "r.npy"), "--ground-truth", str(tmp_path / "g.pkl"), "--knn", "3"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: track 'roxford5k' does not support --knn"


def test_score_unknown_track(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", "disc22", str(tmp_path / "x.csv"), "--ground-truth", str(tmp_path / "g.csv")])
    assert info.value.code == 2
    assert "unknown scorer 'disc22' (did you mean 'disc21'?)" in capsys.readouterr().err
