"""The Ray executor against the local one on the same extraction: same vectors, time ratio.

Both run the engine's sharded extraction (``Engine.sharded_array`` with ``harness.extract.Describe``,
as ``describe:<role>`` does) of a timm model over the same JPEG files, each into a fresh cache:
``local`` computes the shards one after the other in this process (torch's threads, loader worker
processes); ``ray`` hands them to ``--actors`` Ray actors of one CPU each, which publish them into the
cache, on a private local Ray that harness starts (bound to 127.0.0.1). The Ray session's start-up is
timed on its own: it is paid once per process, the actors' once per session ("first"); then local
and warm Ray extractions alternate ``--repeat`` times, each into a fresh cache, and the best of each
is kept (robust to a busy machine). Random-initialised weights (no download); images as in
``bench_extraction.py``.

    python benchmarks/bench_ray_executor.py                       # resnet18, 224 px, 512 images, 8 shards
    python benchmarks/bench_ray_executor.py --images 256 --model resnet50 --actors 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_extraction import write_images  # noqa: E402


def extraction(cache_dir: str, items: list, fn, shard_size: int, executor) -> tuple[float, np.ndarray, dict]:
    """Seconds, vectors and the stage's details of one sharded extraction into a fresh cache."""
    from harness.cache import Cache
    from harness.stages import Engine

    engine = Engine(Cache(cache_dir))
    details: dict = {}

    def compute(work, _inputs):
        details.update(engine.sharded_array(work, items, fn, label="describe", shard_size=shard_size, executor=executor))
        return details

    stage = engine.stage("describe:bench", {"items": len(items)}, [], compute,
                         lambda entry, _i: np.load(entry / "vectors.npy"))
    start = time.perf_counter()
    vectors = engine.value(stage)
    return time.perf_counter() - start, vectors, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="loader processes per extraction (default: the harness's)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating timed runs of each executor (best kept)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import torch

    from harness import ray_session
    from harness.cache import Cache
    from harness.executors import LocalExecutor, RayExecutor
    from harness.extract import Describe, default_workers
    from harness_plugins.timm.descriptors import TimmDescriptor

    workers = default_workers() if args.workers is None else args.workers
    desc = TimmDescriptor(args.model, size=args.size, pooling="model", batch_size=args.batch_size)
    fn = Describe(desc, batch_size=args.batch_size, workers=workers)
    with tempfile.TemporaryDirectory(prefix="hb-", dir="/tmp" if os.path.isdir("/tmp") else None) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        items = write_images(os.path.join(tmp, "images"), args.images)
        extraction(os.path.join(tmp, "c-warm-up"), items[: 2 * args.batch_size], fn, args.shard_size, LocalExecutor())
        start = time.perf_counter()
        ray = ray_session.connect(None, Cache(os.path.join(tmp, "c-ray")))
        session_s = time.perf_counter() - start
        executor = RayExecutor(actors=args.actors)
        cold_s, ray_v, details = extraction(os.path.join(tmp, "c-ray"), items, fn, args.shard_size, executor)
        local_times, warm_times, identical, diff = [], [], True, 0.0
        for r in range(args.repeat):
            local_s, local_v, _ = extraction(os.path.join(tmp, f"c-local{r}"), items, fn, args.shard_size, LocalExecutor())
            warm_s, warm_v, _ = extraction(os.path.join(tmp, f"c-ray{r}"), items, fn, args.shard_size, executor)
            local_times.append(local_s)
            warm_times.append(warm_s)
            identical &= bool(np.array_equal(local_v, ray_v) and np.array_equal(local_v, warm_v))
            diff = max(diff, float(np.abs(local_v - ray_v).max()), float(np.abs(local_v - warm_v).max()))
        actors = len(ray_session.session_state().get("shard_workers", []))
        cpus = int(ray.cluster_resources().get("CPU", 0))
        ray_session.shutdown()
    local_s, warm_s = min(local_times), min(warm_times)
    result = {
        "model": args.model, "size": args.size, "images": args.images, "batch_size": args.batch_size,
        "shard_size": args.shard_size, "shards": details.get("shards"), "workers": workers,
        "torch_threads_local": torch.get_num_threads(), "cpus": os.cpu_count(), "ray_cpus": cpus, "actors": actors,
        "local_s": local_s, "ray_session_start_s": session_s, "ray_first_s": cold_s, "ray_warm_s": warm_s,
        "ratio_warm": local_s / warm_s, "ratio_first": local_s / cold_s,
        "ratio_with_start": local_s / (session_s + cold_s),
        "local_times_s": local_times, "ray_warm_times_s": warm_times, "identical": identical, "max_abs_diff": diff,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{args.model} at {args.size} px, {args.images} JPEG images in {result['shards']} shards of {args.shard_size}, "
          f"batch {args.batch_size}, {workers} loader workers per extraction, {result['cpus']} CPUs")
    print(f"{'path':<58}{'seconds':>9}{'images/s':>10}")
    rows = [("local (one process, %d torch threads)" % result["torch_threads_local"], local_s),
            (f"ray, first extraction ({actors} actors start, 1 CPU each)", cold_s),
            ("ray, warm (actors running)", warm_s)]
    for name, s in rows:
        print(f"{name:<58}{s:>9.2f}{args.images / s:>10.1f}")
    print(f"(local and warm ray: the best of {args.repeat} alternating runs)")
    print(f"{'ray session start (once per process)':<58}{session_s:>9.2f}")
    print(f"ratio local / ray: warm {result['ratio_warm']:.2f}, first {result['ratio_first']:.2f}, "
          f"first with the session's start {result['ratio_with_start']:.2f} (> 1: ray faster)")
    print(f"identical vectors: {result['identical']} (max abs difference {result['max_abs_diff']:.2e})")


if __name__ == "__main__":
    main()
