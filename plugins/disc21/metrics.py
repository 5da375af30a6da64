"""DISC21 metrics (protocols.md §1): micro-AP, recall at precision 0.9, recall at rank 1 and 10.

Linear time, no comparison sort over the predictions (sorting 500,000 values costs 25-50 ms on the
target machine, as much as all the rest together):

- ids become integer codes, read straight from the characters when they have the DISC21 form
  (``Q01234``), so labels are table lookups;
- duplicate (query, reference) pairs are found by counting hashed pair keys (:func:`_smallest_duplicate`);
- the position a pessimistic tie order (negatives before positives among equal scores) gives each
  true positive is computed from counts of the predictions scoring above and equal to it, found by
  bucketing the scores around the few true-positive scores (:func:`_count_above_equal`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from harness.idcodes import _as_str, _digit_codes, encode_ids  # noqa: F401 - re-exported
from harness.idcodes import smallest_duplicate as _smallest_duplicate

from .groundtruth import Disc21GroundTruth

Scorer = Literal["official", "isc2021"]
SCORERS = ("official", "isc2021")


# ------------------------------------------------------------------------------ linear-time counting


def _count_above_equal(values: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ascending distinct finite ``values``: how many of the finite ``x`` are ``>`` and ``==`` each.

    Same counts as binary searches of ``values`` in ``np.sort(x)``, without sorting ``x`` or binary
    searching at all: x and values go to buckets by one monotone map (a higher bucket holds larger
    numbers), so an x needs one exact comparison, with the value sharing its bucket if any, else with
    the next larger value. Buckets holding several values (rare: 16x more buckets than values) fall
    back to ``np.searchsorted`` for their x.
    """
    m, n = len(values), len(x)
    if m == 0 or n == 0:
        return np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    lo = min(float(values[0]), float(x.min())) * 0.5
    hi = max(float(values[-1]), float(x.max())) * 0.5
    n_buckets = 1 << min(max(m.bit_length() + 4, 10), 20)
    with np.errstate(divide="ignore", over="ignore"):
        scale = (n_buckets - 1) / (hi - lo) if hi > lo else 0.0  # halves: hi - lo cannot overflow
    ext = np.append(values, np.inf)  # x is finite: never equal to, always below the sentinel
    if np.isfinite(scale):

        def bucket(v: np.ndarray) -> np.ndarray:
            # every step is monotone non-decreasing under IEEE rounding, so is the composition
            b = v * 0.5
            b -= lo
            b *= scale
            np.minimum(b, n_buckets - 1, out=b)
            return b.astype(np.intp)

        per_bucket = np.bincount(bucket(values), minlength=n_buckets)
        below = np.cumsum(per_bucket) - per_bucket  # values in lower buckets: all smaller than x there
        bx = bucket(x)
        left = below[bx]  # the value in x's bucket, or the next larger one when it has none
        candidate = ext[left]
        equal = candidate == x
        left += candidate < x  # -> number of values < x
        if per_bucket.max() > 1:
            crowded = np.flatnonzero(per_bucket[bx] > 1)
            left[crowded] = np.searchsorted(values, x[crowded])
            equal[crowded] = ext[left[crowded]] == x[crowded]
    else:  # values too close together to bucket (subnormal spread)
        left = np.searchsorted(values, x)
        equal = ext[left] == x
    # one count per (number of values below, equal): x above value j have more than j values below
    counts = np.bincount(2 * left + equal, minlength=2 * (m + 1)).reshape(m + 1, 2)
    above = n - np.cumsum(counts.sum(axis=1))[:m]
    return above, counts[:m, 1]


# ------------------------------------------------------------------------------------------- scoring


def _empty_result(n_pred: int, n_gt: int, scorer: str, pr_points: int) -> dict:
    out = {
        "micro_ap": 0.0,
        "recall_at_p90": 0.0 if scorer == "official" else None,
        "threshold_at_p90": None,
        "recall_at_rank1": 0.0,
        "recall_at_rank10": 0.0,
        "n_predictions": n_pred,
        "n_gt_pairs": n_gt,
        "scorer": scorer,
    }
    if pr_points:
        out["pr_curve"] = []
    return out


def _pr_curve(recall: np.ndarray, precision: np.ndarray, points: int, keep: int | None) -> list[list[float]]:
    """The precision-recall curve at the true positives (the points micro-AP sums), ``[[recall,
    precision], ...]`` by increasing recall, rounded to 6 decimals; above ``points`` points, evenly spaced
    indices keeping the first, the last and ``keep`` (the R@P90 point), so the plot shows where R@P90 is."""
    n = len(recall)
    if n > points:
        idx = np.unique(np.round(np.linspace(0, n - 1, points - (keep is not None))).astype(np.int64))
        if keep is not None:
            idx = np.union1d(idx, [keep])
    else:
        idx = np.arange(n)
    return [[round(float(recall[i]), 6), round(float(precision[i]), 6)] for i in idx]


def score_predictions(
    query_ids: np.ndarray,
    reference_ids: np.ndarray,
    scores: np.ndarray,
    gt: Disc21GroundTruth,
    *,
    pr_points: int = 0,
    scorer: Scorer = "official",
    unique_pairs: bool = False,
) -> dict:
    """DISC21 metrics of predictions ``(query_id, reference_id, score)`` (higher = more confident).

    ``pr_points > 0`` adds ``pr_curve``: at most that many (recall, precision) points of the
    precision-recall curve (:func:`_pr_curve`), for plots.

    ``scorer="official"`` first drops predictions whose query the GT does not list; ``"isc2021"``
    keeps them as false positives. ``n_predictions`` counts the predictions scored. With no GT pair
    (N = 0) or no prediction every rate is 0 and R@P90 is "not reached". Raises ``ValueError`` on
    duplicate (query, reference) pairs (naming the smallest such pair and its first two rows),
    NaN/inf scores or mismatched lengths. ``unique_pairs=True`` skips the duplicate check, for callers
    that made the pairs unique already (the submission reader, which names their lines; a search).
    """
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}, expected one of {SCORERS}")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not (len(query_ids) == len(reference_ids) == len(scores)):
        raise ValueError(f"prediction arrays differ in length: {len(query_ids)}, {len(reference_ids)}, {len(scores)}")
    if not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"prediction {i}: score {scores[i]} is not finite")

    listed_ids = np.concatenate([_as_str(gt.query_ids), _as_str(gt.pair_query_ids)])
    (pq, gq, gpq), nq_codes = encode_ids(query_ids, listed_ids, gt.pair_query_ids)
    (pr, gpr), nr_codes = encode_ids(reference_ids, gt.pair_reference_ids)
    n_gt = len(gpq)

    if n_gt and np.bincount(gpq, minlength=nq_codes).max() > 1:
        raise ValueError("ground truth lists more than one reference for a query")
    pair_key = pq * max(nr_codes, 1) + pr
    key = None if unique_pairs else _smallest_duplicate(pair_key)
    if key is not None:
        i, j = np.flatnonzero(pair_key == key)[:2]
        raise ValueError(f"duplicate prediction ({query_ids[i]}, {reference_ids[i]}) at rows {i} and {j}")

    # Per query code: its GT reference, -1 if listed without one, -2 if not listed ("official" only).
    gt_ref = np.full(nq_codes, -2 if scorer == "official" else -1, dtype=np.int64)
    gt_ref[gq] = -1
    gt_ref[gpq] = gpr
    ref_of = gt_ref[pq]
    # "official" drops unlisted queries' predictions: they are never true positives nor share a
    # query with one, so leaving them out of the score counts is all it takes.
    ranked = scores
    if scorer == "official":
        keep = ref_of != -2
        if not keep.all():
            ranked = np.compress(keep, scores)
    n = len(ranked)
    if n == 0 or n_gt == 0:
        return _empty_result(n, n_gt, scorer, pr_points)

    # Label: the prediction's reference is its query's GT reference (at most one per query).
    tp = np.flatnonzero(ref_of == pr)
    n_tp = len(tp)
    s_tp = scores[tp]

    # Global positions under the pessimistic order, from counts: every prediction scoring strictly
    # higher, then the negatives tied with it, then the positives tied with it.
    tp_order = np.argsort(-s_tp, kind="stable")  # only the true positives
    s_sorted = s_tp[tp_order]
    new_value = np.ones(n_tp, dtype=bool)
    new_value[1:] = s_sorted[1:] != s_sorted[:-1]
    starts = np.flatnonzero(new_value)  # runs of tied positives: first index of each
    run = np.cumsum(new_value) - 1  # each sorted positive's run
    above, tied = _count_above_equal(s_sorted[starts][::-1], ranked)  # per distinct TP score, ascending
    value_index = len(starts) - 1 - run  # each sorted positive's score, as an index into those
    tp_above = starts[run]  # positives strictly higher
    tp_tied = np.diff(np.append(starts, n_tp))[run]
    within = np.arange(n_tp) - tp_above  # index among the tied positives
    position = above[value_index] + (tied[value_index] - tp_tied) + within  # 0-based
    n_true = np.arange(1, n_tp + 1)  # true positives up to and including this one
    precision = n_true / (position + 1)
    micro_ap = float(precision.sum() / n_gt)

    # Highest recall with precision >= 0.9: always attained at a true positive's own position.
    ok = np.flatnonzero(precision >= 0.9)
    if len(ok):
        best = int(ok[-1])
        r_p90, thr = float(n_true[best] / n_gt), float(s_sorted[best])
    else:
        r_p90, thr = (0.0 if scorer == "official" else None), None

    # Rank of each predicted GT pair among its query's predictions (ties pessimistic).
    tp_query = pq[tp]
    pos_score = np.full(nq_codes, np.inf)
    pos_score[tp_query] = s_tp
    at_least = scores >= pos_score[pq]
    per_query = np.bincount(np.compress(at_least, pq), minlength=nq_codes)
    rank = per_query[tp_query] - 1
    out = {
        "micro_ap": micro_ap,
        "recall_at_p90": r_p90,
        "threshold_at_p90": thr,
        "recall_at_rank1": float(np.count_nonzero(rank == 0) / n_gt),
        "recall_at_rank10": float(np.count_nonzero(rank < 10) / n_gt),
        "n_predictions": int(n),
        "n_gt_pairs": int(n_gt),
        "scorer": scorer,
    }
    if pr_points:
        out["pr_curve"] = _pr_curve(n_true / n_gt, precision, pr_points, best if len(ok) else None)
    return out


# --------------------------------------------------------------------------------------------- plugin

PR_POINTS = 200  # points of the stored precision-recall curve (a few kB of JSON per metric)


class Disc21Metrics:
    """DISC21 micro-AP, R@P90 (+ threshold), recall@rank1/10; scorer "official" or "isc2021"."""

    version = "2"  # 2: values carry ``pr_curve`` (at most PR_POINTS points), for the report's plots
    display = {"threshold*": "number", "n_*": "integer"}
    main_metric = "micro_ap"  # what leaderboards rank by and reports plot
    breakdown = True  # a subset of the queries is scored as its own track (per-operation tables)
    protocol = "disc21-official"

    def __init__(self, scorer: Scorer = "official") -> None:
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}, expected one of {SCORERS}")
        self.scorer = scorer
        self.protocol = f"disc21-{scorer}"

    def __call__(self, ground_truth: Disc21GroundTruth, retrieval) -> dict[str, float | None]:
        q, r, s = retrieval.predictions()
        result = score_predictions(q, r, s, ground_truth, scorer=self.scorer, pr_points=PR_POINTS)
        result.pop("scorer")
        return result
