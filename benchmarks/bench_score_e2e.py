"""End to end, process start included: ``harness score disc21`` on a 500,000-row matching CSV vs a plain
Python script doing the same computation (csv module, one sort of tuples), in the same run.

    python benchmarks/bench_score_e2e.py [--n 500000] [--repeat 7] [--scores short|repr|both]

Both are timed as subprocesses, interleaved, after one warm-up run each (page cache; the warm-up is
allowed to write bytecode caches even under PYTHONDONTWRITEBYTECODE, as an installed package has
them). The baseline does every check the harness does (column count, blank lines, header, number
syntax, finite scores, empty ids, duplicate pairs, a query listed twice in the GT) and the
"official" scorer's metrics; the results must agree (to 1e-9) or the script fails. Prints the best
and median wall time of each and the ratios (goal: >= 5x), and the same for CPU time (user +
system of the child process: steadier than wall time on a shared machine), for scores written with 3 decimals
(``short``, many ties) and as Python's shortest repr (``repr``, up to 17 digits: these take numpy's
parser instead of the exact fast path). Also prints the start-up cost alone (a one-row file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLAIN = r'''
import csv, math, sys
from collections import defaultdict

def read(path, ncols):
    """Non-blank rows with their file line; column count checked; header dropped."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rd = csv.reader(f, strict=True)
        out = []
        for row in rd:
            if len(row) != ncols:
                if any(x.strip() for x in row):
                    sys.exit(f"error: {path}: line {rd.line_num}: {len(row)} columns, expected {ncols}")
                continue
            out.append((rd.line_num, row))
    if out and out[0][1][0].strip().lower() == "query_id":
        out = out[1:]
    return out

def main(pred_path, gt_path):
    listed, pairs = set(), {}
    for line, (q, r) in read(gt_path, 2):
        q, r = q.strip(), r.strip()
        if not q or q in listed:
            sys.exit(f"error: {gt_path}: line {line}: empty or repeated query_id")
        listed.add(q)
        if r:
            pairs[q] = r
    n = len(pairs)
    preds, seen = [], set()
    for line, (q, r, s) in read(pred_path, 3):
        q, r = q.strip(), r.strip()
        try:
            s = float(s)
        except ValueError:
            sys.exit(f"error: {pred_path}: line {line}: score {s!r} is not a number")
        if not math.isfinite(s) or not q or not r:
            sys.exit(f"error: {pred_path}: line {line}: bad prediction")
        key = (q, r)
        if key in seen:
            sys.exit(f"error: {pred_path}: line {line}: duplicate prediction")
        seen.add(key)
        if q in listed:  # "official": predictions of queries the GT does not list are dropped
            preds.append((q, r, s))
    labelled = sorted([(-s, pairs.get(q) == r) for q, r, s in preds])  # ties: negatives first
    tp, ap, best = 0, 0.0, 0.0
    for i, (_, y) in enumerate(labelled, start=1):
        if y:
            tp += 1
            ap += tp / i
            if tp / i >= 0.9:
                best = tp / n
    by_query = defaultdict(list)
    for q, r, s in preds:
        by_query[q].append((s, r))
    rank1 = rank10 = 0
    for q, r in pairs.items():
        res = by_query.get(q, ())
        mine = [s for s, rr in res if rr == r]
        if mine:
            rank = sum(1 for s, _ in res if s >= mine[0]) - 1
            rank1 += rank == 0
            rank10 += rank < 10
    print(ap / n, best, rank1 / n, rank10 / n, len(preds))

main(*sys.argv[1:])
'''

KEYS = ("micro_ap", "recall_at_p90", "recall_at_rank1", "recall_at_rank10", "n_predictions")


def make_files(tmp: Path, n: int, seed: int, scores: str) -> tuple[Path, Path]:
    """50,000 listed queries (10,000 matched) among 60,000 ids, 1M references, ``n`` unique predictions."""
    rng = np.random.default_rng(seed)
    gq = np.array([f"Q{i:05d}" for i in range(50_000)])
    gr = np.array([f"R{i:06d}" for i in rng.choice(1_000_000, 10_000, replace=False)] + [""] * 40_000)
    key = np.unique(rng.integers(0, 60_000, 2 * n) * 1_000_000 + rng.integers(0, 1_000_000, 2 * n))
    key = rng.permutation(key)[:n]
    qi, ri = key // 1_000_000, key % 1_000_000
    hit = (qi < 10_000) & (rng.random(len(qi)) < 0.05)  # some true positives, scored higher
    refs = np.where(hit, gr[np.minimum(qi, 9_999)], np.char.add("R", np.char.zfill(ri.astype(str), 6)))
    q = np.char.add("Q", np.char.zfill(qi.astype(str), 5))
    _, first = np.unique(np.char.add(q, refs), return_index=True)  # a hit may repeat a random pair
    q, refs, hit = q[first], refs[first], hit[first]
    s = rng.random(len(q)) + 0.5 * hit
    text = np.round(s, 3).astype(str) if scores == "short" else np.array([repr(float(v)) for v in s])
    pred, gt = tmp / f"pred-{scores}.csv", tmp / "gt.csv"
    with open(pred, "w") as f:
        f.write("query_id,reference_id,score\n")
        f.writelines(f"{a},{b},{c}\n" for a, b, c in zip(q.tolist(), refs.tolist(), text.tolist()))
    with open(gt, "w") as f:
        f.write("query_id,reference_id\n")
        f.writelines(f"{a},{b}\n" for a, b in zip(gq.tolist(), gr.tolist()))
    return pred, gt


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """Wall time, stdout, and CPU time (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, res.stdout, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--scores", choices=["short", "repr", "both"], default="both")
    args = ap.parse_args()
    env = dict(os.environ)
    warm_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    harness = [sys.executable, "-m", "harness", "score", "disc21"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        plain = tmp / "plain_score.py"
        plain.write_text(PLAIN)
        tiny, tiny_gt = tmp / "tiny.csv", tmp / "tiny_gt.csv"
        tiny.write_text("Q00001,R000001,0.5\n")
        tiny_gt.write_text("Q00001,R000001\n")
        start_up = [timed(harness + [str(tiny), "--ground-truth", str(tiny_gt), "--json"], warm_env) for _ in range(args.repeat)]
        print(
            f"start-up alone (one-row files): wall best {min(t[0] for t in start_up):.3f} s, "
            f"median {statistics.median(t[0] for t in start_up):.3f} s; CPU best {min(t[2] for t in start_up):.3f} s"
        )
        for kind in (["short", "repr"] if args.scores == "both" else [args.scores]):
            pred, gt = make_files(tmp, args.n, args.seed, kind)
            cmd_plain = [sys.executable, str(plain), str(pred), str(gt)]
            cmd_harness = harness + [str(pred), "--ground-truth", str(gt), "--json"]
            out_plain = timed(cmd_plain, warm_env)[1]
            out_harness = timed(cmd_harness, warm_env)[1]
            ref = [float(x) for x in out_plain.split()]
            got = json.loads(out_harness)
            for key, value in zip(KEYS, ref):
                assert abs(float(got[key]) - value) <= 1e-9, (kind, key, got[key], value)
            runs_plain, runs_harness = [], []
            for _ in range(args.repeat):  # interleaved: both see the same machine load
                runs_plain.append(timed(cmd_plain, env))
                runs_harness.append(timed(cmd_harness, env))
            print(f"scores {kind:<5}: {int(got['n_predictions']):,} scored of {args.n:,} rows ({pred.stat().st_size / 1e6:.1f} MB), metrics identical to 1e-9")
            for label, i in (("wall", 0), ("CPU ", 2)):
                p = [r[i] for r in runs_plain]
                h = [r[i] for r in runs_harness]
                print(
                    f"  {label}: plain script best {min(p):.3f} s / median {statistics.median(p):.3f} s; "
                    f"harness score best {min(h):.3f} s / median {statistics.median(h):.3f} s; "
                    f"end-to-end ratio {min(p) / min(h):.1f}x (best), {statistics.median(p) / statistics.median(h):.1f}x (median)"
                )


if __name__ == "__main__":
    main()
