"""Revisitop metrics at R1M size: 70 queries x 1,006,000 ranked ids (ROxford5k + 1M distractors).

    /work/venv/bin/python benchmarks/bench_revisitop.py [--depth 1006000] [--seed 0]

Times compute_revisitop (goal < 2 s) and a simple per-query loop implementation of the reference
algorithm (np.isin per query, then Python loops for junk removal, AP and P@k), asserts identical
results (to 1e-9) and prints the ratio. Also times the safe reader's checks on the same array.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness_plugins.revisitop.files import first_duplicate_column
from harness_plugins.revisitop.groundtruth import QueryGnd, RevisitopGroundTruth
from harness_plugins.revisitop.metrics import compute_revisitop

N_DB, NQ = 4993, 70  # ROxford5k database size, queries


def make_inputs(depth: int, seed: int):
    rng = np.random.default_rng(seed)
    gnd = []
    for _ in range(NQ):
        ids = rng.choice(N_DB, 250, replace=False)
        n_e, n_h, n_j = rng.integers(5, 80), rng.integers(0, 80), rng.integers(0, 80)
        e, h, j = ids[:n_e], ids[n_e : n_e + n_h], ids[n_e + n_h : n_e + n_h + n_j]
        gnd.append(QueryGnd(e, h, j, (0.0, 0.0, 1.0, 1.0)))
    gt = RevisitopGroundTruth("bench", tuple(map(str, range(N_DB))), tuple(map(str, range(NQ))), tuple(gnd))
    ranks = np.empty((depth, NQ), dtype=np.int64)
    for q, g in enumerate(gnd):
        col = rng.permutation(max(depth, N_DB + 1_001_000))[:depth]
        # pull the labelled ids towards the top so APs are not all ~0
        labelled = np.concatenate([g.easy, g.hard, g.junk])
        hit = np.isin(col, labelled)
        targets = rng.choice(min(depth, 600), int(hit.sum()), replace=False)
        slot = np.zeros(depth, dtype=bool)
        slot[targets] = True
        ranks[slot, q] = rng.permutation(col[hit])
        ranks[~slot, q] = col[~hit]
    return ranks, gt


def per_query_reference(ranks, gt, ks=(1, 5, 10)):
    """The reference algorithm, one query at a time."""
    out = {}
    for name in ("easy", "medium", "hard"):
        aps, prs, recs = [], [], []
        for q, g in enumerate(gt.gnd):
            pos_ids = {"easy": [g.easy], "medium": [g.easy, g.hard], "hard": [g.hard]}[name]
            ign_ids = {"easy": [g.junk, g.hard], "medium": [g.junk], "hard": [g.junk, g.easy]}[name]
            pos_ids = np.unique(np.concatenate(pos_ids))
            if len(pos_ids) == 0:
                aps.append(None)
                continue
            ign_ids = np.setdiff1d(np.concatenate(ign_ids), pos_ids)
            col = ranks[:, q]
            pos = np.flatnonzero(np.isin(col, pos_ids)).tolist()
            junk = np.flatnonzero(np.isin(col, ign_ids)).tolist()
            k = ij = 0
            for ip in range(len(pos)):  # shift positives by the junk before them
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] -= k
            n = len(pos_ids)
            ap = 0.0
            for j, r in enumerate(pos):
                ap += ((j / r if r > 0 else 1.0) + (j + 1) / (r + 1)) / 2 / n
            aps.append(ap)
            prs.append([sum(1 for r in pos if r + 1 <= min(kk, pos[-1] + 1)) / min(kk, pos[-1] + 1) if pos else 0.0 for kk in ks])
            recs.append([sum(1 for r in pos if r < kk) / n for kk in ks])
        res = {"map": float(np.mean([a for a in aps if a is not None]))}
        for i, kk in enumerate(ks):
            res[f"mp@{kk}"] = float(np.mean([p[i] for p in prs]))
        for i, kk in enumerate(ks):
            res[f"mr@{kk}"] = float(np.mean([r[i] for r in recs]))
        res["aps"] = aps
        out[name] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=1_006_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ranks, gt = make_inputs(args.depth, args.seed)
    print(f"rankings {ranks.shape} int64 ({ranks.nbytes / 2**20:.0f} MiB), {NQ} queries, database {N_DB}")
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        fast = compute_revisitop(ranks, gt)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    slow = per_query_reference(ranks, gt)
    t_slow = time.perf_counter() - t
    for name in slow:
        for key, value in slow[name].items():
            got = fast[name][key]
            if key == "aps":
                assert all((a is None and b is None) or abs(a - b) <= 1e-9 for a, b in zip(got, value)), name
            else:
                assert abs(got - value) <= 1e-9, (name, key, got, value)
    t = time.perf_counter()
    assert first_duplicate_column(ranks) is None
    t_dup = time.perf_counter() - t
    t_fast = min(times)
    print(f"{'step':<36} {'seconds':>8}")
    print(f"{'compute_revisitop (best of %d)' % args.repeat:<36} {t_fast:>8.3f}   goal < 2 s: {'yes' if t_fast < 2 else 'NO'}")
    print(f"{'per-query loop reference':<36} {t_slow:>8.3f}   ratio {t_slow / t_fast:.1f}x")
    print(f"{'reader duplicate-id check':<36} {t_dup:>8.3f}")
    print("mAP E/M/H: " + " / ".join(f"{fast[p]['map'] * 100:.2f}" for p in ("easy", "medium", "hard")))
    print("results identical to 1e-9: yes")


if __name__ == "__main__":
    main()
