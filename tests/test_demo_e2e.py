"""The offline demo end to end through the CLI, at a reduced size: real DISC21-layout files, AugLy
queries, a non-learned descriptor, faiss, the DISC21 scorer; then an identical re-run from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "dataset.n_references=24", "dataset.n_distractors=40", "dataset.n_queries=40", "dataset.n_matched=20",
    "dataset.n_train=48", "dataset.image_size=128",
]


def _run(tmp_path: Path, *extra: str, spec: str = "demo.yaml") -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "harness", "run", str(ROOT / "specs" / spec), "--json",
            "--output", str(tmp_path / "results")]
    for o in SMALL:
        args += ["--set", o]
    args += list(extra)
    env = dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_demo_small_end_to_end_then_cached(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)  # stdout holds the document and nothing else
    values = doc["metrics"]["disc21"]["values"]
    assert doc["metrics"]["disc21"]["protocol"] == "disc21-official"
    assert values["n_gt_pairs"] == 20
    assert 0.0 <= values["micro_ap"] <= 1.0
    root = tmp_path / "cache"
    built = [p for p in root.rglob("dev_ground_truth.csv")]
    assert built, "the demo dataset is written in the DISC21 layout under the cache"
    rows = built[0].read_text().splitlines()
    assert rows[0] == "query_id,reference_id" and any(r.endswith(",") for r in rows[1:])
    statuses = {s["stage"]: s["status"] for s in doc["stages"]}
    assert statuses["describe:queries"] == "computed" and statuses["search"] == "computed"

    second = _run(tmp_path)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["metrics"] == doc["metrics"]
    stored = [s for s in again["stages"] if s["stage"] not in ("dataset", "ground_truth", "index")]
    assert all(s["status"] == "cached" for s in stored), again["stages"]

    chance = _run(tmp_path, "--set", "descriptor={name: random, dim: 512}")
    assert chance.returncode == 0, chance.stderr
    chance_ap = json.loads(chance.stdout)["metrics"]["disc21"]["values"]["micro_ap"]
    assert values["micro_ap"] > chance_ap + 0.2, (values["micro_ap"], chance_ap)

    # the shuffled baseline: the same descriptors, the database rows permuted
    shuffled = _run(tmp_path, "--set", "postprocess=[{name: pca_whiten, dim: 128}, {name: l2_normalize}, "
                    "{name: shuffle_database, seed: 1}]")
    assert shuffled.returncode == 0, shuffled.stderr
    shuffled_doc = json.loads(shuffled.stdout)
    assert {s["stage"]: s["status"] for s in shuffled_doc["stages"]}["describe:database"] == "cached"
    assert values["micro_ap"] > shuffled_doc["metrics"]["disc21"]["values"]["micro_ap"] + 0.2


@pytest.mark.slow
def test_demo_small_with_a_random_init_timm_network(tmp_path):
    """The neural path of the runner: a timm model (random init, no download), aspect-preserving resize
    (mixed tensor shapes in a batch), loader worker processes."""
    res = _run(tmp_path, "--set", "descriptor={name: timm, model: test_resnet, size: 64, resize: short_side}",
               "--set", "extraction={workers: 1, batch_size: 8}", "--set", "postprocess=[{name: l2_normalize}]")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert 0.0 <= doc["metrics"]["disc21"]["values"]["micro_ap"] <= 1.0
    assert doc["environment"]["cuda_available"] is not None  # torch was loaded, so it was asked
    part = next(p for p in doc["plugins"] if p["part"] == "descriptor:timm")
    assert part["plugin"] == "timm" and part["package"] == "harness"


@pytest.mark.slow
def test_demo_grid_gives_one_row_per_cell_and_describes_the_database_once(tmp_path):
    res = _run(tmp_path, "--set", "postprocess=[{name: pca_whiten, dim: 16}, {name: l2_normalize}]", spec="demo-grid.yaml")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["cells"]) == 5 and "metrics" not in doc
    cells = list(range(5))
    by_name = {s["stage"]: s for s in doc["stages"]}
    for name in ("describe:database", "describe:train", "postprocess:fit", "postprocess:database", "index"):
        assert by_name[name]["status"] == "computed" and by_name[name]["cells"] == cells, name
    assert sum(s["stage"].startswith("describe:queries") for s in doc["stages"]) == 5
    for cell in doc["cells"]:
        assert 0.0 <= cell["metrics"]["disc21"]["values"]["micro_ap"] <= 1.0
    table = subprocess.run([sys.executable, "-m", "harness", "run", str(ROOT / "specs" / "demo-grid.yaml"), "--quiet",
                            "--output", str(tmp_path / "results"), *sum((["--set", o] for o in SMALL), []),
                            "--set", "postprocess=[{name: pca_whiten, dim: 16}, {name: l2_normalize}]"],
                           capture_output=True, text=True, env=dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "cache"),
                                                                    COLUMNS="200"), timeout=600)
    assert table.returncode == 0, table.stderr
    assert "demo-grid: metrics (5 cells)" in table.stdout and "augly.grayscale" in table.stdout
