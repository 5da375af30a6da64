"""Every real-track spec in specs/ runs end to end, through the CLI, on a miniature of its data layout.

Only what needs the real data or weights is overridden: ``dataset.root`` (and the distractor folder,
and subset counts larger than the miniature), the descriptor (the offline GIST baseline instead of a
local checkpoint) and the PCA dimension (a miniature has fewer training images than 256).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from miniatures import make_disc21, make_revisitop

REPO = Path(__file__).resolve().parent.parent
# demos: test_demo_e2e; other pipelines' specs (active indexing needs a differentiable descriptor): their own tests
SPECS = sorted(p for p in (REPO / "specs").glob("*.yaml") if not p.name.startswith(("demo", "active-indexing")))
MINI_COUNTS = {"n_queries": 10, "n_references": 16, "n_train": 12}


def test_every_track_has_a_spec():
    names = {p.stem for p in SPECS}
    assert {"disc21", "disc21-subset", "roxford5k", "rparis6k", "roxford5k-r1m", "rparis6k-r1m"} <= names


def _overrides(spec: dict, tmp_path: Path) -> list[str]:
    data = tmp_path / "data"
    dataset = spec["dataset"]
    sets = [f"dataset.root={data}", "descriptor={name: gist}"]
    if dataset["name"] == "disc21":
        make_disc21(data, n_queries=14, n_matched=8, n_references=20, n_train=16, layout="official")
        sets += [f"dataset.{k}={MINI_COUNTS[k]}" for k in MINI_COUNTS if dataset.get(k) is not None]
    else:
        mini = make_revisitop(data, dataset["benchmark"], n_db=16, n_queries=4,
                              with_distractors=5 if dataset.get("distractors") else 0)
        if dataset.get("distractors"):
            sets.append(f"dataset.distractors={mini.distractors}")
    for i, step in enumerate(spec.get("postprocess") or []):
        if "dim" in step:
            sets.append(f"postprocess[{i}].dim=8")
    return sets


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_runs_on_a_miniature(spec_path, tmp_path):
    spec = yaml.safe_load(spec_path.read_text())
    cmd = [sys.executable, "-m", "harness", "run", str(spec_path), "--output", str(tmp_path / "results"), "--json"]
    for assignment in _overrides(spec, tmp_path):
        cmd += ["--set", assignment]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)

    assert doc["task"] == spec["task"]
    assert doc["spec"]["resolved"]["dataset"]["root"] == str(tmp_path / "data")
    n_queries = doc["data"]["counts"]["queries"]
    assert n_queries == (MINI_COUNTS["n_queries"] if spec["dataset"].get("n_queries") else
                         14 if spec["dataset"]["name"] == "disc21" else 4)
    metric = spec["metrics"][0]["name"]
    result = doc["metrics"][metric]
    assert {"protocol", "version", "params", "values"} <= set(result)
    values = result["values"]
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in values.items() if not k.startswith(("n_", "threshold"))), values
    if metric == "disc21":
        assert result["protocol"] == f"disc21-{spec['metrics'][0]['scorer']}"
        assert values["n_gt_pairs"] > 0 and values["micro_ap"] > 0.0
    else:
        # the miniature's easy views are near copies: GIST + L2 normalization finds them
        assert values["medium.map"] > 0.5, values
