"""Runner + cache: stage keys, cache hits per stage, partial recomputation, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import toy_plugins
from harness.cache import Cache
from harness.runner import run_spec


def _run(tmp_path, toy_registry, spec, overrides=(), use_cache=True):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    doc, out = run_spec(str(path), list(overrides), cache_dir=str(tmp_path / "cache"), use_cache=use_cache,
                        output_dir=str(tmp_path / "results"), registry=toy_registry)
    return doc, out


def _status(doc):
    return {s["stage"]: s["status"] for s in doc["stages"]}


def test_first_run_computes_then_everything_is_cached(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    first, path1 = _run(tmp_path, toy_registry, spec)
    st = _status(first)
    assert st["describe:queries"] == st["describe:database"] == st["describe:train"] == "computed"
    assert st["postprocess:fit"] == st["postprocess:queries"] == st["postprocess:database"] == st["search"] == "computed"
    assert st["metric:recall_at[k=1]"] == st["metric:recall_at[k=3]"] == "computed"
    # mirrored copies are found: the symmetric mean-colour descriptor is mirror-invariant
    assert first["metrics"]["recall_at[k=1]"]["values"]["recall@1"] == 1.0

    second, path2 = _run(tmp_path, toy_registry, spec)
    st2 = _status(second)
    # stored stages are cached; in-memory ones (ground truth, index) are not needed at all
    assert all(v == "cached" for k, v in st2.items() if k not in ("dataset", "ground_truth", "index")), st2
    assert st2["dataset"] == "checked" and st2["index"] == st2["ground_truth"] == "not needed"
    assert second["metrics"] == first["metrics"]
    assert path1 != path2 and path1.exists() and path2.exists()


def test_changing_only_a_metric_recomputes_only_that_metric(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    _run(tmp_path, toy_registry, spec)
    doc, _ = _run(tmp_path, toy_registry, spec, overrides=["metrics[1].k=2"])
    st = _status(doc)
    assert st["metric:recall_at[k=2]"] == "computed"
    assert st["metric:recall_at[k=1]"] == "cached"
    assert st["search"] == st["postprocess:queries"] == st["describe:queries"] == "cached"


def test_changing_the_index_keeps_descriptors(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    _run(tmp_path, toy_registry, spec)
    doc, _ = _run(tmp_path, toy_registry, spec, overrides=["index.k=5"])
    st = _status(doc)
    assert st["search"] == "computed" and st["postprocess:database"] == "cached"
    assert st["describe:database"] == "cached"


def test_no_cache_recomputes_and_leaves_no_cache(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    _run(tmp_path, toy_registry, spec)
    doc, _ = _run(tmp_path, toy_registry, spec, use_cache=False)
    assert _status(doc)["search"] == "computed"


def test_transform_stage_is_cached_and_reproducible(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"), transform={"name": "mirror", "p": 0.5}, seed=3)
    doc1, _ = _run(tmp_path, toy_registry, spec)
    assert _status(doc1)["queries"] == "computed"
    cache = Cache(tmp_path / "cache")
    key = next(s["key"] for s in doc1["stages"] if s["stage"] == "queries")
    images = sorted((cache.lookup(key) / "images").glob("*.png"))
    assert len(images) == 6
    # a fresh cache, same seed: bit-identical query images
    other = tmp_path / "other"
    other.mkdir()
    doc2, _ = run_spec(str(tmp_path / "spec.yaml"), [], cache_dir=str(other / "cache"), output_dir=str(other / "r"),
                       registry=toy_registry)
    images2 = sorted((Cache(other / "cache").lookup(key) / "images").glob("*.png"))
    assert [p.read_bytes() for p in images] == [p.read_bytes() for p in images2]
    doc3, _ = _run(tmp_path, toy_registry, spec, overrides=["seed=4"])
    assert _status(doc3)["queries"] == "computed"


def test_result_document_contents(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    doc, path = _run(tmp_path, toy_registry, spec, overrides=["index.k=4"])
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["schema_version"] == 2
    assert on_disk["cells"] == [{"overrides": {}, "metrics": on_disk["metrics"]}]
    source = on_disk["harness_source"]
    assert source["version"] == on_disk["harness_version"]
    if source["git_commit"] is not None:  # running from a checkout (as in CI): the exact commit
        assert len(source["git_commit"]) == 40 and isinstance(source["dirty"], bool)
    assert on_disk["task"] == "toy"
    assert on_disk["spec"]["resolved"]["index"] == {"name": "brute", "k": 4}
    assert on_disk["spec"]["overrides"] == ["index.k=4"]
    assert len(on_disk["spec"]["hash"]) == 64
    parts = {p["part"]: p for p in on_disk["plugins"]}
    assert {"dataset:toy", "descriptor:mean_color_toy", "index:brute", "metric:recall_at"} <= set(parts)
    assert parts["index:brute"]["version"] == "1"
    env = on_disk["environment"]
    assert env["python"] and "numpy" in env["packages"]
    assert on_disk["data"]["counts"] == {"queries": 6, "database": 12, "train": 8}
    assert len(on_disk["data"]["fingerprint"]) == 64
    m = on_disk["metrics"]["recall_at[k=1]"]
    assert m["protocol"] == "toy-recall" and m["version"] == "1" and m["params"] == {"k": 1}
    assert all(isinstance(s["seconds"], float) for s in on_disk["stages"])


def test_dataset_change_invalidates_everything(tmp_path, toy_registry):
    spec = toy_plugins.spec(str(tmp_path / "data"))
    _run(tmp_path, toy_registry, spec)
    extra = tmp_path / "data" / "database" / "D999.jpg"
    extra.write_bytes((tmp_path / "data" / "database" / "D000.jpg").read_bytes())
    doc, _ = _run(tmp_path, toy_registry, spec)
    st = _status(doc)
    assert st["describe:database"] == "computed" and st["search"] == "computed"


def test_interrupted_cache_write_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path / "c")
    with pytest.raises(RuntimeError):
        with cache.write("ab" * 32) as work:
            (work / "x.npy").write_bytes(b"partial")
            raise RuntimeError("killed")
    assert cache.lookup("ab" * 32) is None
    assert not any((tmp_path / "c" / "tmp").iterdir())


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import toy_plugins
    from harness.runner import run_spec
    from harness.testing import registry_with
    from harness.progress import Reporter
    doc, _ = run_spec({spec!r}, [], cache_dir={cache!r}, output_dir={out!r}, registry=registry_with(toy_plugins))
    import json
    print(json.dumps([s for s in doc["stages"] if s["stage"] == "describe:database"]))
    """
)


def test_resume_after_kill_9(tmp_path):
    data = tmp_path / "data"
    spec = toy_plugins.spec(str(data))
    spec["dataset"]["n_database"] = 40
    spec["descriptor"]["delay"] = 0.05  # 2 s of extraction for the database
    spec["extraction"] = {"workers": 1, "shard_size": 4, "batch_size": 2}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    cache = tmp_path / "cache"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), spec=str(spec_path), cache=str(cache),
                                out=str(tmp_path / "results"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    objects = cache / "objects"
    deadline = time.time() + 60
    # wait until a few database shards are published, then kill -9 in the middle of the extraction
    def stage_of(meta: Path) -> str | None:
        try:  # the run removes superseded shard entries (queries, train) while we look
            return json.loads(meta.read_text()).get("stage")
        except FileNotFoundError:
            return None

    while time.time() < deadline:
        metas = list(objects.glob("*/*/meta.json")) if objects.exists() else []
        shards = [m for m in metas if stage_of(m) == "describe:database:shard"]
        if len(shards) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # every published entry is complete: it has its meta.json and its files
    for entry in objects.glob("*/*"):
        assert (entry / "meta.json").is_file(), f"half-written entry {entry}"
    done_before = len([m for m in objects.glob("*/*/meta.json")
                       if json.loads(m.read_text()).get("stage") == "describe:database:shard"])
    assert 3 <= done_before < 10
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])[0]
    assert record["status"] == "computed"
    assert record["details"]["shards"] == 10
    assert record["details"]["shards_reused"] >= done_before


def test_rowwise_postprocessing_in_blocks_equals_whole_array(tmp_path, monkeypatch):
    from harness_plugins.retrieval import pipeline as runner

    class Scale:
        rowwise = True

        def apply(self, x, role):
            return np.asarray(x) * 2.0 + 1.0

    class Norm:
        rowwise = True

        def apply(self, x, role):
            return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = np.random.default_rng(0).standard_normal((1000, 6)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    source = np.load(tmp_path / "in.npy", mmap_mode="r")
    monkeypatch.setattr(runner, "POSTPROCESS_BLOCK", 128)
    assert runner.apply_chain([Scale(), Norm()], source, "database", tmp_path / "blocks.npy") == 6
    monkeypatch.setattr(runner, "POSTPROCESS_BLOCK", 10**9)
    runner.apply_chain([Scale(), Norm()], source, "database", tmp_path / "whole.npy")
    assert np.array_equal(np.load(tmp_path / "blocks.npy"), np.load(tmp_path / "whole.npy"))


def test_result_document_reads_back_and_rejects_other_files(tmp_path, toy_registry):
    from harness.errors import UserError
    from harness.results import read_document

    _, path = _run(tmp_path, toy_registry, toy_plugins.spec(str(tmp_path / "data")))
    assert read_document(path)["task"] == "toy"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1}')
    with pytest.raises(UserError, match="lacks harness_version"):
        read_document(bad)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a readable result document"):
        read_document(bad)
