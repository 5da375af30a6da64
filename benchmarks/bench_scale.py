"""The DISC21 descriptor path at full scale: PCA-whitening, exact global top-K and scoring, through the
harness vs raw numpy / faiss calls doing the same, time and peak memory, in the same run.

Default (full) size, the DISC21 dev phase's: 1,000,000 references, 50,000 queries (10,000 of them
noisy copies of references, the rest unmatched, all listed in the ground truth), d = 256 float32,
1,000,000 training rows; K = 10 x queries = 500,000 pairs. ``--scale`` multiplies every count.

Synthetic descriptors: anisotropic Gaussians (axis scales 1 / sqrt(1 + j / 8), a random rotation and
offset), so that whitening matters; a copy is its reference plus noise of the same shape, its level
drawn per query in [0.5, 4] (relative to the signal), so that micro-AP lands between 0 and 1.

Two steps, each side in its own subprocess (its own peak RSS and CPU time; inputs are memory-mapped .npy
files, as the stage cache hands descriptors over):

1. post-processing: PCA-whitening to 256 fitted on the training rows, then L2 normalisation,
   applied to the training rows, the references and the queries.
   - harness: the ``pca_whiten`` and ``l2_normalize`` parts, fitted as the retrieval pipeline's
     ``postprocess:fit`` stage fits them (each step on the train split as the previous one left it,
     the whitened train split saved) and applied with its ``apply_chain`` (blocks of 65,536 rows
     from the memory-mapped input into an .npy file), as ``postprocess:<role>`` does;
   - raw: ``faiss.PCAMatrix(d, 256, eigen_power=-0.5)`` trained on every training row (its default
     subsamples to 1,000 rows per dimension), ``apply`` and ``faiss.normalize_L2``.
2. search + scoring of the descriptor submission: the whitened vectors in DISC21's HDF5 layout.
   - harness: ``harness score disc21 sub.h5 --ground-truth gt.csv --json``, the CLI as a user runs
     it (reading checks, K = 10 x GT-listed queries, the strict cut, the official metrics);
   - raw: h5py, then the organisers' search (isc2021 ``descriptor_matching.search_with_capped_res``:
     faiss ``range_search_max_results`` over their exponential query iterator, cropped to K), then
     micro-AP, R@P90 and recall@rank1 in numpy (ties pessimistic, protocols.md section 1);
   - ``--shortcut`` adds the cheaper, non-exact ``faiss.knn`` with k = 10 per query and the K best of
     those candidates (how much of the exact top-K it finds, and its micro-AP, are printed).

Checks (the script fails otherwise): both whitenings give the same squared distances (relative
difference < 1e-2 on sampled pairs; the PCA axes' signs are arbitrary), and both searches + scorings
give the same number of predictions and micro-AP, R@P90 and recall@rank1 to 1e-6 (the two searches
compute float32 distances with different faiss kernels, range search and kNN, so a pair within one
float32 rounding of another may swap ranks: a few 1e-9 in micro-AP).

    nice python benchmarks/bench_scale.py                # full size: about an hour on 2 shared cores
    nice python benchmarks/bench_scale.py --scale 0.05   # 50,000 references, 2,500 queries: a quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"nb": 1_000_000, "nq": 50_000, "matched": 10_000, "ntrain": 1_000_000}
DIM = 256
CHUNK = 65536


# -------------------------------------------------------------------------------------------- data


def make_data(root: Path, nb: int, nq: int, matched: int, ntrain: int, d: int, seed: int = 0) -> None:
    """train.npy, references.npy, queries.npy (float32) and gt.csv under ``root``, in chunks."""
    rng = np.random.default_rng(seed)
    scales = (1.0 / np.sqrt(1.0 + np.arange(d) / 8.0)).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    offset = rng.standard_normal(d).astype(np.float32)

    def shaped(n: int) -> np.ndarray:
        return (rng.standard_normal((n, d), dtype=np.float32) * scales) @ rotation

    def sample(path: Path, n: int) -> np.ndarray:
        out = np.lib.format.open_memmap(path, "w+", np.float32, (n, d))
        for i in range(0, n, CHUNK):
            m = min(CHUNK, n - i)
            out[i : i + m] = shaped(m) + offset
        out.flush()
        return out

    sample(root / "train.npy", ntrain)
    refs = sample(root / "references.npy", nb)
    originals = rng.choice(nb, matched, replace=False)
    noise = rng.uniform(0.5, 4.0, matched).astype(np.float32)[:, None]
    queries = np.concatenate([refs[originals] + noise * shaped(matched), shaped(nq - matched) + offset])
    order = rng.permutation(nq)  # matched queries spread among the unmatched ones
    np.save(root / "queries.npy", np.ascontiguousarray(queries[order], dtype=np.float32))
    gt_ref = np.concatenate([originals, np.full(nq - matched, -1)])[order]
    with open(root / "gt.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_id", "reference_id"])
        for i, r in enumerate(gt_ref):
            w.writerow([f"Q{i:05d}", f"R{r:06d}" if r >= 0 else ""])


def write_submission(root: Path, queries: np.ndarray, references: np.ndarray) -> Path:
    import h5py

    path = root / "sub.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("query", data=queries)
        f.create_dataset("reference", data=references)
        f.create_dataset("query_ids", data=np.array([f"Q{i:05d}".encode() for i in range(len(queries))]))
        f.create_dataset("reference_ids", data=np.array([f"R{i:06d}".encode() for i in range(len(references))]))
    return path


# ------------------------------------------------------------------------------------------ children


def child_post_harness(root: Path, out: Path) -> dict:
    from harness.npy import save_npy
    from harness_plugins.postprocess.steps import L2Normalize, PCAWhiten
    from harness_plugins.retrieval.pipeline import apply_chain

    steps = [PCAWhiten(dim=DIM), L2Normalize()]
    train = np.load(root / "train.npy", mmap_mode="r")
    for step in steps:  # as postprocess:fit: each step fitted on the train split the previous one left
        step.fit(train)
        train = step.apply(train, "train")
    save_npy(out / "train.npy", np.ascontiguousarray(train, dtype=np.float32))
    for role, name in (("database", "references"), ("queries", "queries")):
        apply_chain(steps, np.load(root / f"{name}.npy", mmap_mode="r"), role, out / f"{name}.npy")
    return {}


def child_post_raw(root: Path, out: Path) -> dict:
    import faiss

    train = np.load(root / "train.npy", mmap_mode="r")
    pca = faiss.PCAMatrix(train.shape[1], DIM, -0.5)
    pca.max_points_per_d = len(train)  # every training row (the default subsamples to 1,000 x d)
    pca.train(train)
    for name in ("references", "queries"):
        y = pca.apply(np.load(root / f"{name}.npy", mmap_mode="r"))
        faiss.normalize_L2(y)
        np.save(out / f"{name}.npy", y)
    return {}


def read_submission(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """h5py read of sub.h5 and the GT: (GT-listed queries, references, each query's GT reference
    index or -1, number of GT pairs)."""
    import h5py

    with h5py.File(root / "sub.h5", "r") as f:
        xq, xb = f["query"][:], f["reference"][:]
        qids = f["query_ids"][:].astype(str)
        rids = f["reference_ids"][:].astype(str)
    ref_index = {r: i for i, r in enumerate(rids)}
    query_index = {q: i for i, q in enumerate(qids)}
    gt = np.full(len(qids), -1, np.int64)
    with open(root / "gt.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    listed = np.zeros(len(qids), bool)
    for q, r in rows:
        listed[query_index[q]] = True
        if r:
            gt[query_index[q]] = ref_index[r]
    return xq[listed], xb, gt[listed], int((gt >= 0).sum())  # official: the queries the GT lists


def metrics(q: np.ndarray, ids: np.ndarray, dis: np.ndarray, gt: np.ndarray, n_gt: int) -> dict:
    """micro-AP, R@P90 and recall@rank1 of pairs (query, reference, squared distance); ties pessimistic."""
    positive = ids == gt[q]
    order = np.lexsort((positive, dis))  # distance ascending; among ties negatives first (pessimistic)
    hits = np.flatnonzero(positive[order])
    precision = np.arange(1, len(hits) + 1) / (hits + 1)
    ok = np.flatnonzero(precision >= 0.9)
    by_query = np.lexsort((positive, dis, q))  # per query: distance ascending, negatives first among ties
    first = np.r_[True, q[by_query][1:] != q[by_query][:-1]]
    rank1 = np.count_nonzero(first & positive[by_query])
    return {"micro_ap": float(precision.sum() / n_gt), "recall_at_p90": float((ok[-1] + 1) / n_gt) if len(ok) else 0.0,
            "recall_at_rank1": rank1 / n_gt, "n_predictions": int(len(dis))}


def child_score_raw(root: Path, out: Path) -> dict:
    """h5py + the organisers' capped search (exact) + the DISC21 metrics in numpy."""
    import faiss
    from faiss.contrib.exhaustive_search import range_search_max_results

    xq, xb, gt, n_gt = read_submission(root)
    k = 10 * len(xq)

    def query_iterator(x: np.ndarray):  # isc2021 descriptor_matching.query_iterator
        bs, i = 32, 0
        while i < len(x):
            block = x[i : i + bs]
            yield block
            if bs < 20000:
                bs *= 2
            i += len(block)

    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    _, lims, dis, ids = range_search_max_results(index, query_iterator(xq), 1e10, max_results=2 * k,
                                                 min_results=k, ngpu=-1)
    q = np.repeat(np.arange(len(xq)), np.diff(lims.astype(np.int64)))
    if len(dis) > k:  # search_with_capped_res: crop to K exactly
        keep = np.zeros(len(dis), bool)
        keep[dis.argpartition(k)[:k]] = True
        q, dis, ids = q[keep], dis[keep], ids[keep]
    np.save(out / "pairs.npy", np.sort(q * len(xb) + ids))
    return metrics(q, ids, dis, gt, n_gt)


def child_score_knn(root: Path, out: Path) -> dict:
    """The shortcut: ``faiss.knn`` k = K / nq = 10 per query, then the K best of those candidates.
    Cheaper, and not the same computation: a query owning more than 10 of the top-K pairs loses some."""
    import faiss

    xq, xb, gt, n_gt = read_submission(root)
    k = 10 * len(xq)
    dist, idx = faiss.knn(xq, xb, 10)
    flat = dist.ravel()
    keep = np.argpartition(flat, k)[:k] if k < len(flat) else np.arange(len(flat))
    q, ids, dis = keep // 10, idx.ravel()[keep], flat[keep]
    np.save(out / "pairs-knn.npy", np.sort(q * len(xb) + ids))
    return metrics(q, ids, dis, gt, n_gt)


CHILDREN = {"post-harness": child_post_harness, "post-raw": child_post_raw, "score-raw": child_score_raw,
            "score-knn": child_score_knn}


#: Runs argv[1:] as its only child: its RUSAGE_CHILDREN is then that child's own peak RSS and CPU time.
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "wall = time.perf_counter() - t\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "sys.stderr.write(p.stderr)\n"
    "print(p.stdout.strip())\n"
    "print(json.dumps({'rc': p.returncode, 'wall': wall, 'cpu': u.ru_utime + u.ru_stime, 'peak': u.ru_maxrss * 1024}))\n"
)


def run(cmd: list[str]) -> dict:
    """The child's JSON output (its last stdout line before the measurement) plus its wall and CPU
    seconds and peak RSS (bytes)."""
    res = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    measured = json.loads(lines[-1]) if lines else {"rc": res.returncode}
    if res.returncode != 0 or measured["rc"] != 0:
        sys.exit(f"{' '.join(cmd)} failed ({measured['rc']}): {res.stderr.strip()[-3000:]}")
    body = "\n".join(lines[:-1]).strip()
    out = json.loads(body) if body.startswith("{") else {}
    return {**out, **measured}


def child(name: str, root: Path, out: Path) -> None:
    print(json.dumps(CHILDREN[name](root, out)))


# ---------------------------------------------------------------------------------------------- main


def same_distances(root: Path, a: Path, b: Path, pairs: int = 20000) -> float:
    """Largest relative difference of squared query-reference distances between two whitenings."""
    rng = np.random.default_rng(1)
    qa, qb = np.load(a / "queries.npy", mmap_mode="r"), np.load(b / "queries.npy", mmap_mode="r")
    ra, rb = np.load(a / "references.npy", mmap_mode="r"), np.load(b / "references.npy", mmap_mode="r")
    qi, ri = rng.integers(0, len(qa), pairs), np.sort(rng.integers(0, len(ra), pairs))
    da = ((qa[qi].astype(np.float64) - ra[ri]) ** 2).sum(1)
    db = ((qb[qi].astype(np.float64) - rb[ri]) ** 2).sum(1)
    return float(np.max(np.abs(da - db) / np.maximum(da, 1e-12)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every count (default 1: the full size)")
    p.add_argument("--keep", help="directory for the data and outputs (kept); default a temporary one")
    p.add_argument("--shortcut", action="store_true",
                   help="also time the non-exact shortcut (faiss.knn k = 10 per query, then the K best)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, Path(args.root), Path(args.out))
        return
    sizes = {k: max(1, round(v * args.scale)) for k, v in SIZES.items()}
    sizes["ntrain"] = max(sizes["ntrain"], 2 * DIM)
    import faiss

    print(f"DISC21 descriptor path: {sizes['nb']:,} references, {sizes['nq']:,} queries ({sizes['matched']:,} matched), "
          f"{sizes['ntrain']:,} training rows, d = {DIM}, K = {10 * sizes['nq']:,}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads, GPUs {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_data(root, sizes["nb"], sizes["nq"], sizes["matched"], sizes["ntrain"], DIM)
        print(f"  data generated in {time.perf_counter() - t0:.1f} s", flush=True)
        me = [sys.executable, __file__, "--root", str(root)]
        results: dict[str, dict] = {}
        for side in ("raw", "harness"):
            (root / side).mkdir()
            results[f"post-{side}"] = r = run([*me, "--child", f"post-{side}", "--out", str(root / side)])
            print(f"  post-processing  {side:8s} wall {r['wall']:8.1f} s  cpu {r['cpu']:8.1f} s  "
                  f"peak RSS {r['peak'] / 2**30:6.2f} GiB", flush=True)
        rel = same_distances(root, root / "raw", root / "harness")
        print(f"  whitenings agree: largest relative difference of squared distances {rel:.2e}", flush=True)
        if not rel < 1e-2:
            sys.exit(f"the two whitenings differ: {rel:.3e}")
        write_submission(root, np.load(root / "harness" / "queries.npy"), np.load(root / "harness" / "references.npy"))
        results["score-raw"] = r = run([*me, "--child", "score-raw", "--out", str(root / "raw")])
        print(f"  search + scoring raw      wall {r['wall']:8.1f} s  cpu {r['cpu']:8.1f} s  peak RSS {r['peak'] / 2**30:6.2f} GiB",
              flush=True)
        env_cmd = [sys.executable, "-m", "harness", "score", "disc21", str(root / "sub.h5"),
                   "--ground-truth", str(root / "gt.csv"), "--json"]
        results["score-harness"] = h = run(env_cmd)
        print(f"  search + scoring harness  wall {h['wall']:8.1f} s  cpu {h['cpu']:8.1f} s  peak RSS {h['peak'] / 2**30:6.2f} GiB",
              flush=True)
        raw = results["score-raw"]
        gap = max(abs(raw[key] - h[key]) for key in ("micro_ap", "recall_at_p90", "recall_at_rank1"))
        if gap > 1e-6 or raw["n_predictions"] != h["n_predictions"]:
            sys.exit(f"the metrics differ: raw {raw}, harness {h}")
        print(f"  same metrics: micro-AP {h['micro_ap']:.6f}, R@P90 {h['recall_at_p90']:.6f}, "
              f"recall@rank1 {h['recall_at_rank1']:.6f}, {h['n_predictions']:,} predictions "
              f"(largest difference {gap:.1e})")
        if args.shortcut:
            results["score-knn"] = s = run([*me, "--child", "score-knn", "--out", str(root / "raw")])
            exact, approx = np.load(root / "raw" / "pairs.npy"), np.load(root / "raw" / "pairs-knn.npy")
            print(f"  shortcut knn k=10   wall {s['wall']:8.1f} s  cpu {s['cpu']:8.1f} s  peak RSS {s['peak'] / 2**30:6.2f} GiB: "
                  f"finds {len(np.intersect1d(exact, approx)) / len(exact):.4f} of the exact top-K pairs, "
                  f"micro-AP {s['micro_ap']:.6f} (exact {h['micro_ap']:.6f})", flush=True)
    print("summary (harness / raw):")
    for step in ("post", "score"):
        a, b = results[f"{step}-harness"], results[f"{step}-raw"]
        print(f"  {'post-processing' if step == 'post' else 'search + scoring':17s} wall {a['wall'] / b['wall']:.2f}x  "
              f"cpu {a['cpu'] / b['cpu']:.2f}x  peak RSS {a['peak'] / b['peak']:.2f}x "
              f"({a['peak'] / 2**30:.2f} vs {b['peak'] / 2**30:.2f} GiB)")
    tot = {s: sum(results[f"{k}-{s}"]["wall"] for k in ("post", "score")) for s in ("harness", "raw")}
    print(f"  total wall: harness {tot['harness']:.1f} s, raw {tot['raw']:.1f} s: {tot['harness'] / tot['raw']:.2f}x")
    if "score-knn" in results:
        a, b = results["score-harness"], results["score-knn"]
        print(f"  search + scoring vs the knn shortcut: wall {a['wall'] / b['wall']:.2f}x  cpu {a['cpu'] / b['cpu']:.2f}x")


if __name__ == "__main__":
    main()
