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
# retrieval tracks on their real layouts (demos: test_demo_e2e; other pipelines and active indexing, which
# needs a differentiable descriptor: their own tests)
SPECS = sorted(p for p in (REPO / "specs").glob("*.yaml")
               if not p.stem.startswith(("demo", "active-indexing")) and not p.stem.endswith("-demo")
               and yaml.safe_load(p.read_text()).get("pipeline", "retrieval") == "retrieval")
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
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in values.items()
               if not k.startswith(("n_", "threshold")) and not isinstance(v, list)), values
    assert all(0.0 <= x <= 1.0 for point in values.get("pr_curve", []) for x in point)
    if metric == "disc21":
        assert result["protocol"] == f"disc21-{spec['metrics'][0]['scorer']}"
        assert values["n_gt_pairs"] > 0 and values["micro_ap"] > 0.0
    else:
        # the miniature's easy views are near copies: GIST + L2 normalization finds them
        assert values["medium.map"] > 0.5, values


TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_simat_spec_runs_on_a_miniature_of_the_official_layout(tmp_path):
    from harness_plugins.simat.miniature import write_simat_miniature

    data = write_simat_miniature(tmp_path / "simat", copies=2)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CLIP))
    spec_path = REPO / "specs" / "simat.yaml"
    cmd = [sys.executable, "-m", "harness", "run", str(spec_path), "--output", str(tmp_path / "results"), "--json",
           "--set", f"dataset={{name: simat, root: {data}, split: dev, oracle: {data / 'oscar_similarity_matrix.npy'}}}",
           "--set", f"encoder={{name: openclip, model: tiny, config: {tmp_path / 'tiny.json'}}}",
           "--set", "composer={name: simat.arithmetic, lambda_: 1.0}"]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    spec = yaml.safe_load(spec_path.read_text())
    assert len(doc["cells"]) == len(spec["grid"][0]["composer.lambda_"])
    by_name = {s["stage"]: s for s in doc["stages"]}
    every = list(range(len(doc["cells"])))
    for shared in ("describe:database", "describe:texts", "compose:prepare"):  # encoded once for the lambda grid
        assert by_name[shared]["status"] == "computed" and by_name[shared]["cells"] == every
    for cell in doc["cells"]:
        assert 0.0 <= cell["metrics"]["simat.score"]["values"]["score"] <= 100.0
    assert {t["name"] for t in doc["tables"]} == {"queries"}
