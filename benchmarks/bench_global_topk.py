"""Global top-K (DISC21 descriptor track): harness vs the bare faiss call, time and peak memory.

Default size: 10,000 queries x 1,000,000 references, d = 256, K = 10 x nq = 100,000.

Variants, each run in its own subprocess so that its peak RSS (``ru_maxrss``) is its own:

- ``faiss``: the most direct faiss equivalent, ``faiss.knn(xq, xb, K / nq)`` (one exact search
  over the whole database, k = 10 per query) followed by a global ``np.argpartition`` of the
  nq x k candidates. It is *cheaper* than the real task: a query that owns more than K / nq of the
  global top-K pairs loses them (see "recall vs exact" in the output).
- ``harness``: ``harness_plugins.faiss.search.global_top_k`` (exact).
- ``index``: the same through the index plugin, ``FaissIndex(search={global_top_k: K})``.

Goals: time(harness) / time(faiss) <= 1.1; peak RSS <= 2 x the descriptor arrays.

    python benchmarks/bench_global_topk.py                 # full size (a few minutes on 2 cores)
    python benchmarks/bench_global_topk.py --scale 0.1     # 1,000 x 100,000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

VARIANTS = ("faiss", "harness", "index")


def make_data(nq: int, nb: int, d: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 descriptors, generated in chunks (no float64 temporaries to inflate the peak)."""
    rng = np.random.default_rng(seed)

    def block(n: int) -> np.ndarray:
        out = np.empty((n, d), np.float32)
        for i in range(0, n, 65536):
            rows = out[i : i + 65536]
            if kind == "uniform":
                rng.random(rows.shape, dtype=np.float32, out=rows)
            else:
                rng.standard_normal(rows.shape, dtype=np.float32, out=rows)
                if kind == "unit":
                    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return out

    return block(nq), block(nb)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_child(args: argparse.Namespace) -> None:
    import faiss

    from harness_plugins.faiss.index import FaissIndex
    from harness_plugins.faiss.search import global_top_k

    rss_start = current_rss_bytes()  # interpreter + numpy + faiss, before any data
    xq, xb = make_data(args.nq, args.nb, args.d, args.data)
    k = args.k
    rss_data = current_rss_bytes()
    result = None
    t0, c0 = time.perf_counter(), cpu_seconds()
    if args.child == "faiss":
        dist, idx = faiss.knn(xq, xb, -(-k // len(xq)))
        flat = dist.ravel()
        keep = np.argpartition(flat, k - 1)[:k] if k < len(flat) else np.arange(len(flat))
        result = (keep // dist.shape[1], idx.ravel()[keep])
    elif args.child == "harness":
        n = global_top_k(xq, xb, k)
        result = (n.q, n.r)
    else:
        index = FaissIndex("Flat", search={"global_top_k": k})
        index.add(xb)
        n = index.search(xq)
        result = (n.q, n.r)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pairs = np.unique(result[0] * args.nb + result[1])
    np.save(args.out, pairs)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "rss_start": rss_start, "rss_data": rss_data}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies nq and nb (default 1: 10k x 1M)")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--k", type=int, default=None, help="K (default 10 x nq)")
    p.add_argument("--data", choices=("uniform", "normal", "unit"), default="uniform",
                   help="uniform [0,1), standard normal, or L2-normalized normal (like real descriptors)")
    p.add_argument("--repeat", type=int, default=1, help="runs per variant (interleaved); the minimum is reported")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--nq", type=int, help=argparse.SUPPRESS)
    p.add_argument("--nb", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run_child(args)
        return

    import faiss
    import tempfile

    nq, nb = max(1, round(10_000 * args.scale)), max(1, round(1_000_000 * args.scale))
    k = args.k or 10 * nq
    array_bytes = (nq + nb) * args.d * 4
    print(f"global top-K: nq={nq:,} nb={nb:,} d={args.d} K={k:,} data={args.data} "
          f"threads={faiss.omp_get_max_threads()} faiss={faiss.__version__}; "
          f"descriptor arrays {array_bytes / 2**20:,.0f} MiB", flush=True)
    runs: dict[str, list[dict]] = {v: [] for v in args.variants.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):  # interleaved, so that load from other processes hits all variants
            for variant in runs:
                out = f"{tmp}/{variant}.npy"
                cmd = [sys.executable, __file__, "--child", variant, "--nq", str(nq), "--nb", str(nb),
                       "--d", str(args.d), "--k", str(k), "--data", args.data, "--out", out]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                res["pairs"] = np.load(out)
                runs[variant].append(res)
                print(f"  [{rep + 1}/{args.repeat}] {variant:8s} wall {res['wall']:8.2f} s  cpu {res['cpu']:8.2f} s  "
                      f"peak RSS {res['peak'] / 2**20:8,.0f} MiB (before data {res['rss_start'] / 2**20:,.0f} MiB, "
                      f"with data {res['rss_data'] / 2**20:,.0f} MiB)", flush=True)
    best = {v: {m: min(r[m] for r in rs) for m in ("wall", "cpu", "peak", "rss_start")} for v, rs in runs.items()}
    print("summary (minimum over repeats):")
    for v, b in best.items():
        line = f"  {v:8s} wall {b['wall']:8.2f} s  cpu {b['cpu']:8.2f} s"
        if "faiss" in best and v != "faiss":
            line += (f"  ratio vs faiss: wall {b['wall'] / best['faiss']['wall']:.3f}, "
                     f"cpu {b['cpu'] / best['faiss']['cpu']:.3f} (goal <= 1.1)")
        print(line)
    for v, b in best.items():
        print(f"  {v:8s} peak RSS / descriptor arrays = {b['peak'] / array_bytes:.2f} (goal <= 2); "
              f"excluding the interpreter's own {b['rss_start'] / 2**20:,.0f} MiB: "
              f"{(b['peak'] - b['rss_start']) / array_bytes:.2f}")
    exact = runs.get("harness") or runs.get("index")
    if "faiss" in runs and exact:
        a, e = runs["faiss"][0]["pairs"], exact[0]["pairs"]
        print(f"  the per-query faiss shortcut finds {len(np.intersect1d(a, e)) / max(1, len(e)):.4f} "
              "of the exact global top-K pairs")

if __name__ == "__main__":
    main()
