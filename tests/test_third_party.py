"""A real third-party distribution: built in a temporary directory, installed with pip, discovered
through its ``harness`` entry point, and used in the demo spec via --set. A second entry point of the
same package is broken and must be reported without affecting anything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "harness-example-plugin"
version = "0.3.1"
dependencies = []

[project.entry-points.harness]
example = "harness_example_plugin"
example_broken = "harness_example_plugin.broken"

[tool.setuptools]
packages = ["harness_example_plugin"]
"""

PLUGIN = '''
"""An example third-party plugin: a tiny colour-layout descriptor."""
import numpy as np

import harness


class TinyLayout:
    """Mean RGB on a coarse grid, L2-normalised."""

    version = "2"

    def __init__(self, grid: int = 4):
        self.grid = grid

    def describe(self, images):
        g = self.grid
        rows = []
        for im in images:
            a = np.asarray(im.convert("RGB").resize((8 * g, 8 * g)), dtype=np.float32)
            v = a.reshape(g, 8, g, 8, 3).mean(axis=(1, 3)).ravel()
            v -= v.mean()
            rows.append(v / (np.linalg.norm(v) + 1e-6))
        return np.stack(rows).astype(np.float32)


@harness.hookimpl
def register_descriptors(register):
    register("example_tiny", TinyLayout)


from harness.parts import Field


class SelfRetrieval:
    """Does each image find itself among the originals once transformed? (top-1 accuracy)"""

    version = "1"
    fields = {
        "dataset": Field("part", "dataset", required=True),
        "transform": Field("chain", "transform", required=True),
        "descriptor": Field("part", "descriptor", required=True),
        "metrics": Field("parts", "metric", required=True),
    }
    roles = ("database",)
    metric_input = "self_matches"

    def build(self, cell, ctx):
        data = ctx.dataset(cell.dataset)
        originals = data.items("database")
        copies = ctx.transformed(originals, cell.transform, name="copies")
        a = ctx.described(originals, cell.descriptor, "database")
        b = ctx.described(copies, cell.descriptor, "copies")

        def compute(work, inputs):
            x, y = (np.asarray(v, dtype=np.float64) for v in inputs)
            d = (y ** 2).sum(1)[:, None] - 2 * y @ x.T + (x ** 2).sum(1)[None, :]
            np.save(work / "top1.npy", d.argmin(1))
            return {"copies": len(y)}

        match = ctx.engine.stage("match", {"rule": "l2 top-1"}, [a, b], compute,
                                 lambda entry, _inputs: np.load(entry / "top1.npy"))
        return ctx.metrics(cell.metrics, match, data.ground_truth)


class Top1:
    """Fraction of copies whose nearest original is their own."""

    version = "1"
    protocol = "example-self-top1"
    input_type = "self_matches"
    display = {"top1": "percent"}

    def __call__(self, ground_truth, top1):
        return {"top1": float((top1 == np.arange(len(top1))).mean()) if len(top1) else None}


@harness.hookimpl
def register_pipelines(register):
    register("example_self", SelfRetrieval)


@harness.hookimpl
def register_metrics(register):
    register("example_top1", Top1)
'''

BROKEN = '''
import a_module_that_is_not_installed  # noqa: F401
'''

DEMO_SMALL = [
    "dataset.n_references=16", "dataset.n_distractors=24", "dataset.n_queries=24", "dataset.n_matched=12",
    "dataset.n_train=32", "dataset.image_size=128", "postprocess=[{name: l2_normalize}]",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("third_party")
    pkg = base / "src"
    (pkg / "harness_example_plugin").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "harness_example_plugin" / "__init__.py").write_text(PLUGIN)
    (pkg / "harness_example_plugin" / "broken.py").write_text(BROKEN)
    target = base / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert (target / "harness_example_plugin-0.3.1.dist-info" / "entry_points.txt").exists() or any(
        target.glob("harness_example_plugin-0.3.1.dist-info")
    )
    return target


def _harness(site: Path, *args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), HARNESS_CACHE_DIR=str(cache), HARNESS_LOAD_PLUGINS="harness-example-plugin")
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_plugins_lists_the_third_party_package_and_its_broken_entry_point(site, tmp_path):
    res = _harness(site, "plugins", "--json", cache=tmp_path / "c", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    listing = {p["name"]: p for p in json.loads(res.stdout)}
    assert listing["example"]["package"] == "harness-example-plugin"
    assert listing["example"]["version"] == "0.3.1"
    assert listing["example"]["parts"] == {"descriptor": ["example_tiny"], "pipeline": ["example_self"], "metric": ["example_top1"]}
    assert listing["example_broken"]["errors"] == [
        "import: ModuleNotFoundError: No module named 'a_module_that_is_not_installed'"
    ]
    assert listing["disc21"]["errors"] == []  # built-ins unaffected


@pytest.mark.slow
def test_third_party_descriptor_runs_in_the_demo_spec(site, tmp_path):
    args = ["run", str(ROOT / "specs" / "demo.yaml"), "--set", "descriptor={name: example_tiny, grid: 4}",
            "--output", str(tmp_path / "results"), "--json", "--quiet"]
    for o in DEMO_SMALL:
        args += ["--set", o]
    res = _harness(site, *args, cache=tmp_path / "cache", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    values = doc["metrics"]["disc21"]["values"]
    assert 0.0 <= values["micro_ap"] <= 1.0
    part = next(p for p in doc["plugins"] if p["part"] == "descriptor:example_tiny")
    assert part["package"] == "harness-example-plugin" and part["version"] == "2"
    packages = doc["environment"]["packages"]  # the distributions that provided parts, and their requirements
    assert packages["harness-example-plugin"] == "0.3.1" and packages["harness"] and packages["numpy"]
    written = list((tmp_path / "results").glob("demo-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["metrics"] == doc["metrics"]


SELF_SPEC = """
task: self
pipeline: example_self
dataset: {name: demo, n_references: 8, n_distractors: 8, n_queries: 4, n_matched: 2, n_train: 4, image_size: 96}
transform: [{name: augly.jpeg, min_quality: 40, max_quality: 40}]
descriptor: {name: example_tiny, grid: 4}
metrics: [{name: example_top1}]
grid:
  - transform: [[{name: augly.jpeg, min_quality: 40, max_quality: 40}], [{name: augly.jpeg, min_quality: 40, max_quality: 40}, {name: augly.grayscale}]]
"""


def test_third_party_pipeline_is_listed_and_runs_through_the_engine_with_caching(site, tmp_path):
    listed = _harness(site, "list", "pipeline", cache=tmp_path / "c", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "example_self" in listed.stdout and "retrieval" in listed.stdout
    (tmp_path / "self.yaml").write_text(SELF_SPEC)
    args = ["run", str(tmp_path / "self.yaml"), "--json", "--quiet", "--output", str(tmp_path / "r")]
    first = _harness(site, *args, cache=tmp_path / "cache", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["pipeline"] == "example_self" and len(doc["cells"]) == 2
    for cell in doc["cells"]:
        assert 0.0 <= cell["metrics"]["example_top1"]["values"]["top1"] <= 1.0
    status = {s["stage"]: s for s in doc["stages"]}
    assert status["describe:database"]["cells"] == [0, 1]  # the originals are described once
    assert status["copies"]["cells"] == [0, 1] and status["copies#2"]["cells"] == [1]  # shared chain prefix
    second = json.loads(_harness(site, *args, cache=tmp_path / "cache", cwd=tmp_path).stdout)
    assert [c["metrics"] for c in second["cells"]] == [c["metrics"] for c in doc["cells"]]
    assert {s["stage"]: s["status"] for s in second["stages"]}["metric:example_top1"] == "cached"
    bad = _harness(site, "validate", str(tmp_path / "self.yaml"), "--set", "metrics=[{name: disc21}]",
                   cache=tmp_path / "c", cwd=tmp_path)
    assert bad.returncode == 2
    assert "metric 'disc21' takes 'retrieval' input; the 'example_self' pipeline produces 'self_matches'" in bad.stderr
