"""The active-indexing specs end to end through the CLI at reduced sizes: the offline demo, and the real
DISC21 spec on a miniature of the DISC21 layout with a TorchScript export of a random-initialised network
(what the spec's SSCD path would point at)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from miniatures import make_disc21

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("[{name: attack.none}, {name: attack.jpeg, quality: 50},"
           " {name: attack.screenshot, template: web, crop_src_to_fit: false}]")


def _harness(tmp_path: Path, spec: str, sets: list[str], *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "harness", "run", str(ROOT / "specs" / spec), "--output", str(tmp_path / "results"), *extra]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="250")
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


DEMO_SMALL = [
    "dataset.n_references=8", "dataset.n_distractors=24", "dataset.n_queries=8", "dataset.n_matched=8",
    "dataset.n_train=64", "dataset.image_size=64", "descriptor.size=32",
    f"grid[1]={{transform: {ATTACKS}}}", "grid[0].activation[1].steps=3", "extraction={workers: 0}",
]


@pytest.mark.slow
def test_demo_spec_small(tmp_path):
    proc = _harness(tmp_path, "active-indexing-demo.yaml", DEMO_SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the terminal table: one row per (passive/active, attack) with R@1 and micro-AP, and the summary
    table = proc.stdout
    assert "metrics (6 cells)" in table and "recall_at_1" in table and "micro_ap" in table and "summary" in table
    rows = [line for line in table.splitlines() if line.startswith("│ ") and "activation=" in line]
    assert len(rows) == 6 and sum("activation=none;" in r for r in rows) == 3 and sum("activation=jnd(" in r for r in rows) == 3
    doc = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    cells = doc["cells"]
    assert len(cells) == 6
    for cell in cells:
        values = cell["metrics"]["active_indexing"]["values"]
        assert values["n_queries"] == 8
        assert all(0.0 <= values[k] <= 1.0 for k in ("recall_at_1", "recall_at_10", "recall_at_100", "mrr", "micro_ap"))
        assert values["recall_at_1"] <= values["recall_at_10"] <= values["recall_at_100"]
    # the summary: per activation, the mean over the cells without the screenshot attack
    for first, group in ((0, cells[:3]), (3, cells[3:])):
        summary = group[0]["metrics"]["summary"]
        assert all(c["metrics"]["summary"] == summary for c in group)
        assert summary["values"]["n_cells"] == 2 and summary["params"]["cells"] == [first, first + 1]
        want = sum(c["metrics"]["active_indexing"]["values"]["recall_at_1"] for c in group[:2]) / 2
        assert summary["values"]["recall_at_1"] == pytest.approx(want)
        assert summary["params"]["descriptor"]["weights"].startswith("random-init")  # labelled as a random network
    # the database is described and indexed once for all six cells; activation once for the three active ones
    stages = {s["stage"]: s for s in doc["stages"]}
    for name in ("describe:database", "describe:train", "index"):
        assert stages[name]["cells"] == list(range(6)) and stages[name]["status"] == "computed", stages[name]
    assert [s["stage"] for s in doc["stages"]].count("describe:database") == 1
    activate = stages["activate"]
    assert activate["cells"] == [3, 4, 5] and activate["details"]["items"] == 8
    assert activate["details"]["mean_cos_after"] > activate["details"]["mean_cos_before"]

    again = _harness(tmp_path, "active-indexing-demo.yaml", DEMO_SMALL, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["cells"] == doc["cells"]
    assert all(s["status"] in ("cached", "checked", "not needed") for s in second["stages"]
               if s["stage"] not in ("ground_truth", "summary", "summary#2")), second["stages"]


def test_activation_option_typo_is_a_spec_error_with_its_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(ROOT / "specs" / "active-indexing-demo.yaml"),
                           "--set", "grid[0].activation[1].stepz=3"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "activation.stepz: unknown activation option" in proc.stderr and "did you mean 'steps'" in proc.stderr


def test_activation_with_a_non_differentiable_descriptor_is_refused(tmp_path):
    proc = _harness(tmp_path, "active-indexing-demo.yaml", [*DEMO_SMALL, "descriptor={name: gist}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: activation needs a differentiable descriptor")


@pytest.mark.slow
def test_real_spec_on_a_disc21_miniature_with_a_torchscript_export(tmp_path):
    import timm
    import torch

    data = tmp_path / "data"
    make_disc21(data, n_queries=14, n_matched=6, n_references=20, n_train=32, layout="official")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    model = tmp_path / "random_test_resnet.torchscript.pt"
    with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; it is SSCD's format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(model))
    sets = [f"dataset.root={data}", f"descriptor.path={model}", "descriptor.size=32",
            "index={name: faiss, factory: 'IVF2,PQ8x4', nprobe: 1, search: {k: 100}}",
            "extraction={batch_size: 16, workers: 0}", "grid[0].activation[1].steps=2",
            "grid[1]={transform: [{name: attack.jpeg, quality: 50}]}"]
    proc = _harness(tmp_path, "active-indexing.yaml", sets, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["pipeline"] == "active_indexing" and len(doc["cells"]) == 2
    assert doc["data"]["counts"]["database"] == 20
    for cell in doc["cells"]:
        assert cell["metrics"]["active_indexing"]["values"]["n_queries"] == 6  # the references the GT pairs
    assert doc["cells"][0]["metrics"]["summary"]["params"]["descriptor"]["name"] == "torchscript"


@pytest.mark.parametrize("spec", ["active-indexing.yaml", "active-indexing-indexes.yaml", "active-indexing-demo.yaml"])
def test_active_indexing_specs_validate(spec):
    proc = subprocess.run([sys.executable, "-m", "harness", "validate", str(ROOT / "specs" / spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
