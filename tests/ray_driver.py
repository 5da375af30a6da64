"""The Ray executor's scenarios in one process, so that they share one Ray session (run by
``test_ray_executor.py`` in a private network namespace, under strace). Writes what it saw as JSON.

usage: python ray_driver.py ROOT OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import ray_toys
import toy_plugins
from harness.cache import Cache
from harness.errors import UserError
from harness.runner import run_spec
from harness.testing import registry_with

ROOT = Path(sys.argv[1])
REGISTRY = registry_with(toy_plugins, ray_toys)
DESCRIBE = ("describe:queries", "describe:database", "describe:train")


def run(name: str, cache: str, descriptor: dict, **extraction) -> dict:
    spec = {"task": name, "dataset": {"name": "coded", "root": str(ROOT / "data")}, "descriptor": descriptor,
            "postprocess": [{"name": "center"}], "index": {"name": "brute", "k": 3},
            "metrics": [{"name": "recall_at", "k": 1}],
            "extraction": {"workers": 0, "batch_size": 4, "shard_size": 4, **extraction}}
    path = ROOT / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    doc, _ = run_spec(str(path), cache_dir=str(ROOT / cache), output_dir=None, registry=REGISTRY)
    stages = {s["stage"]: s for s in doc["stages"]}
    vectors = {s: np.load(Cache(ROOT / cache).lookup(stages[s]["key"]) / "vectors.npy") for s in DESCRIBE}
    return {"seconds": time.perf_counter() - start, "metrics": doc["metrics"], "stages": stages, "vectors": vectors}


def same(a: dict, b: dict) -> bool:
    return all(a["vectors"][s].shape == b["vectors"][s].shape and np.array_equal(a["vectors"][s], b["vectors"][s])
               for s in DESCRIBE)


def main() -> None:
    out: dict = {}
    toy = {"name": "mean_color_toy"}
    local = run("local", "c1", toy)

    # the same spec with executor: ray over the local run's cache: the same keys, all cached, no Ray started
    cached = run("cached", "c1", toy, executor="ray", actors=2)
    out["cached_statuses"] = sorted({s["status"] for s in cached["stages"].values() if s["stage"] != "dataset"})
    out["ray_imported_when_cached"] = "ray" in sys.modules

    fresh = run("fresh", "c2", toy, executor="ray", actors=2)
    import harness.ray_session as session

    out["ray_dir"] = str(session._session.own.path)
    out["cache_tmp"] = str(Cache(ROOT / "c2").tmp)
    out["same_keys"] = {s: local["stages"][s]["key"] == fresh["stages"][s]["key"] for s in local["stages"]}
    out["same_vectors"] = same(local, fresh)
    out["same_metrics"] = local["metrics"] == fresh["metrics"]
    out["fresh_details"] = {s: fresh["stages"][s]["details"] for s in DESCRIBE}
    out["seconds"] = {"local": local["seconds"], "fresh": fresh["seconds"]}

    # a worker killed in the middle of the database shard that starts at image 8
    log, marker = ROOT / "batches.log", ROOT / "crashed"
    crash = run("crash", "c3", {"name": "crash_once", "log": str(log), "marker": str(marker), "crash_at": 8,
                                "delay": 0.05}, executor="ray", actors=2)
    out["crash_same_vectors"] = same(local, crash)
    out["crash_details"] = {s: crash["stages"][s]["details"] for s in DESCRIBE}
    out["crash_marker"] = marker.read_text() if marker.exists() else None
    out["crash_log"] = log.read_text().splitlines()

    # a user error inside a worker comes back as itself: one line
    try:
        run("fails", "c4", {"name": "crash_once", "log": str(ROOT / "fails.log"), "marker": str(ROOT / "fails"),
                            "fail_at": 13}, executor="ray", actors=2)
        out["worker_error"] = None
    except UserError as exc:
        out["worker_error"] = [type(exc).__name__, str(exc)]

    session.shutdown()
    out["ray_dir_left"] = Path(out["ray_dir"]).exists()
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
