"""DISC21 scorer vs a straightforward implementation of the reference algorithm (Python tuple sort and
loops, as the isc2021 library does it), on the same 500,000 random predictions, in the same run.

    /work/venv/bin/python benchmarks/bench_disc21_microap.py [--n 500000] [--seed 0]

Asserts identical results (to 1e-9) and prints the times and the speed ratio (goal: >= 50x): one run
of the reference, the best of ``--repeat`` runs of the harness scorer (its median is printed too).
Every harness run includes all of ``score_predictions``: id encoding, validation, duplicate check.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from harness_plugins.disc21.groundtruth import Disc21GroundTruth
from harness_plugins.disc21.metrics import score_predictions


def reference(preds, gt_rows, scorer):
    """The definitions of protocols.md §1 in plain Python: sets, one tuple sort, loops."""
    listed = {q for q, _ in gt_rows}
    pairs = {(q, r) for q, r in gt_rows if r}
    n = len(pairs)
    seen = set()
    for q, r, _ in preds:
        if (q, r) in seen:
            raise ValueError(f"duplicate ({q}, {r})")
        seen.add((q, r))
    if scorer == "official":
        preds = [p for p in preds if p[0] in listed]
    labelled = sorted((-s, (q, r) in pairs) for q, r, s in preds)  # ties: negatives (False) first
    tp, ap, best, thr = 0, 0.0, None, None
    for i, (neg_s, y) in enumerate(labelled, start=1):
        tp += y
        precision = tp / i
        if y:
            ap += precision
        if precision >= 0.9 and (best is None or tp / n > best):
            best, thr = tp / n, -neg_s
    by_query = defaultdict(list)
    for q, r, s in preds:
        by_query[q].append((s, r))
    rank1 = rank10 = 0
    for q, r in pairs:
        results = by_query.get(q, [])
        mine = [s for s, rr in results if rr == r]
        if mine:
            rank = sum(1 for s, _ in results if s >= mine[0]) - 1
            rank1 += rank == 0
            rank10 += rank < 10
    return {
        "micro_ap": ap / n,
        "recall_at_p90": best if best is not None or scorer == "isc2021" else 0.0,
        "threshold_at_p90": thr,
        "recall_at_rank1": rank1 / n,
        "recall_at_rank10": rank10 / n,
        "n_predictions": len(preds),
        "n_gt_pairs": n,
        "scorer": scorer,
    }


def make_inputs(n: int, seed: int):
    """50,000 listed queries (10,000 matched) among 60,000 ids, 1M references; scores with many ties."""
    rng = np.random.default_rng(seed)
    gq = np.array([f"Q{i:05d}" for i in range(50_000)])
    gr = np.array([f"R{i:06d}" for i in rng.choice(1_000_000, 10_000, replace=False)] + [""] * 40_000)
    qi = rng.integers(0, 60_000, n)
    ri = rng.integers(0, 1_000_000, n)
    hit = rng.random(n) < 0.02  # some true positives, scored a little higher on average
    qi[hit] = rng.integers(0, 10_000, hit.sum())
    key = np.unique(qi * 1_000_000 + ri, return_index=True)[1]  # drop duplicate pairs
    qi, ri, hit = qi[key], ri[key], hit[key]
    q = np.char.add("Q", np.char.zfill(qi.astype(str), 5))
    r = np.where(hit, gr[np.minimum(qi, 9_999)], np.char.add("R", np.char.zfill(ri.astype(str), 6)))
    key = np.unique(np.char.add(q, r), return_index=True)[1]
    q, r, hit = q[key], r[key], hit[key]
    s = np.round(rng.random(len(q)) + 0.5 * hit, 3)  # 3 decimals: many ties
    return q, r, s, gq, gr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    q, r, s, gq, gr = make_inputs(args.n, args.seed)
    gt = Disc21GroundTruth.from_arrays(gq, gr)
    preds = list(zip(q.tolist(), r.tolist(), s.tolist()))
    gt_rows = list(zip(gq.tolist(), gr.tolist()))
    print(f"{len(q):,} predictions, {gt.n_pairs:,} GT pairs, {len(np.unique(s)):,} distinct scores")
    print(f"{'scorer':<9} {'reference (s)':>14} {'harness (s)':>12} {'median':>8} {'ratio':>8}  micro_ap  R@P90")
    for scorer in ("official", "isc2021"):
        t = time.perf_counter()
        slow = reference(preds, gt_rows, scorer)
        t_slow = time.perf_counter() - t
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fast = score_predictions(q, r, s, gt, scorer=scorer)
            times.append(time.perf_counter() - t)
        t_fast = min(times)
        for key, value in slow.items():
            same = abs(fast[key] - value) <= 1e-9 if isinstance(value, float) else fast[key] == value
            assert same, (scorer, key, fast[key], value)
        t_med = float(np.median(times))
        print(
            f"{scorer:<9} {t_slow:>14.3f} {t_fast:>12.4f} {t_med:>8.4f} {t_slow / t_fast:>7.1f}x  "
            f"{fast['micro_ap']:.6f}  {fast['recall_at_p90']}"
        )
    print("results identical to 1e-9: yes")


if __name__ == "__main__":
    main()
