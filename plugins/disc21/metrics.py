"""DISC21 metrics (protocols.md §1): micro-AP, recall at precision 0.9, recall at rank 1 and 10.

Vectorized: ids become integer codes, labels come from table lookups, and the only sort over the
predictions is one value sort of the scores (plus one integer sort that rejects duplicate pairs).
The positions a pessimistic tie order would give the true positives (negatives before positives
among equal scores) are computed from counts, so no sorted permutation of the predictions is built.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .groundtruth import Disc21GroundTruth

Scorer = Literal["official", "isc2021"]
SCORERS = ("official", "isc2021")
_MAX_DENSE = 10_000_000  # digit codes below this are used directly as table indices


# ------------------------------------------------------------------------------------------ id codes


def _as_str(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype.kind == "U" else a.astype(str)


def _digit_codes(arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """Fast path for ids of one fixed form, e.g. ``Q01234``: same length, same prefix, then digits.

    Such ids map one-to-one to the integer value of their digits. Returns None when the ids do not
    all share one such form (the caller falls back to a sort-based factorization).
    """
    mats = [a.view(np.uint32).reshape(len(a), -1) for a in arrays if len(a)]
    if not mats:
        return [np.zeros(0, dtype=np.int64) for _ in arrays]
    width = mats[0].shape[1]
    if any(m.shape[1] != width for m in mats):
        return None
    # per character column, over all ids (1-D column reductions are much faster than axis=0 ones)
    lo = np.array([min(int(m[:, c].min()) for m in mats) for c in range(width)])
    hi = np.array([max(int(m[:, c].max()) for m in mats) for c in range(width)])
    if lo.min() == 0:
        return None  # some ids are shorter (numpy pads them with NUL)
    is_digit = (lo >= 48) & (hi <= 57)
    n_digits = 0
    while n_digits < width and is_digit[width - 1 - n_digits]:
        n_digits += 1
    n_digits = min(n_digits, 18)  # int64
    prefix = width - n_digits
    if n_digits == 0 or not (lo[:prefix] == hi[:prefix]).all():
        return None  # no digit suffix, or the prefix varies
    out = []
    for a in arrays:
        code = np.zeros(len(a), dtype=np.int64)
        if len(a):
            m = a.view(np.uint32).reshape(len(a), -1)
            for c in range(prefix, width):
                code *= 10
                code += m[:, c]
                code -= 48
        out.append(code)
    return out


def encode_ids(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Map string arrays to int64 codes in ``[0, size)``: equal strings get equal codes across arrays."""
    strs = [_as_str(a) for a in arrays]
    codes = _digit_codes(strs)
    if codes is not None:
        top = max((int(c.max()) for c in codes if len(c)), default=-1) + 1
        if top <= _MAX_DENSE:
            return codes, top
        flat = np.concatenate(codes)
    else:
        flat = np.concatenate(strs) if strs else np.zeros(0, dtype=str)
    uniq, inverse = np.unique(flat, return_inverse=True)
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    return [inverse[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(len(arrays))], len(uniq)


# ------------------------------------------------------------------------------------------- scoring


def _empty_result(n_pred: int, n_gt: int, scorer: str) -> dict:
    return {
        "micro_ap": 0.0,
        "recall_at_p90": 0.0 if scorer == "official" else None,
        "threshold_at_p90": None,
        "recall_at_rank1": 0.0,
        "recall_at_rank10": 0.0,
        "n_predictions": n_pred,
        "n_gt_pairs": n_gt,
        "scorer": scorer,
    }


def score_predictions(
    query_ids: np.ndarray,
    reference_ids: np.ndarray,
    scores: np.ndarray,
    gt: Disc21GroundTruth,
    *,
    scorer: Scorer = "official",
) -> dict:
    """DISC21 metrics of predictions ``(query_id, reference_id, score)`` (higher = more confident).

    ``scorer="official"`` first drops predictions whose query the GT does not list; ``"isc2021"``
    keeps them as false positives. ``n_predictions`` counts the predictions scored. With no GT pair
    (N = 0) or no prediction every rate is 0 and R@P90 is "not reached". Raises ``ValueError`` on
    duplicate (query, reference) pairs, NaN/inf scores or mismatched lengths.
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
    dup = np.sort(pq * max(nr_codes, 1) + pr)
    if len(dup) > 1 and (dup[1:] == dup[:-1]).any():
        key = int(dup[1:][dup[1:] == dup[:-1]][0])
        i, j = np.flatnonzero(pq * max(nr_codes, 1) + pr == key)[:2]
        raise ValueError(f"duplicate prediction ({query_ids[i]}, {reference_ids[i]}) at rows {i} and {j}")

    if scorer == "official":
        listed = np.zeros(nq_codes, dtype=bool)
        listed[gq] = True
        keep = listed[pq]
        if not keep.all():
            pq, pr, scores = pq[keep], pr[keep], scores[keep]
    n = len(scores)
    if n == 0 or n_gt == 0:
        return _empty_result(n, n_gt, scorer)

    # Label: the prediction's reference is its query's GT reference (at most one per query).
    gt_ref = np.full(nq_codes, -1, dtype=np.int64)
    gt_ref[gpq] = gpr
    tp = np.flatnonzero(gt_ref[pq] == pr)
    n_tp = len(tp)
    s_tp = scores[tp]

    # Global positions under the pessimistic order, from counts: every prediction scoring strictly
    # higher, then the negatives tied with it, then the positives tied with it (one sort of values).
    ordered = np.sort(scores)
    above = n - np.searchsorted(ordered, s_tp, side="right")
    tied = np.searchsorted(ordered, s_tp, side="right") - np.searchsorted(ordered, s_tp, side="left")
    tp_order = np.argsort(-s_tp, kind="stable")  # only the true positives
    s_sorted = s_tp[tp_order]
    tp_above = np.searchsorted(-s_sorted, -s_sorted, side="left")  # positives strictly higher
    tp_tied = np.searchsorted(-s_sorted, -s_sorted, side="right") - tp_above
    within = np.arange(n_tp) - tp_above  # index among the tied positives
    position = above[tp_order] + (tied[tp_order] - tp_tied) + within  # 0-based
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
    pos_score = np.full(nq_codes, np.inf)
    pos_score[pq[tp]] = s_tp
    at_least = scores >= pos_score[pq]
    per_query = np.bincount(pq[at_least], minlength=nq_codes)
    rank = per_query[pq[tp]] - 1
    return {
        "micro_ap": micro_ap,
        "recall_at_p90": r_p90,
        "threshold_at_p90": thr,
        "recall_at_rank1": float(np.count_nonzero(rank == 0) / n_gt),
        "recall_at_rank10": float(np.count_nonzero(rank < 10) / n_gt),
        "n_predictions": int(n),
        "n_gt_pairs": int(n_gt),
        "scorer": scorer,
    }


# --------------------------------------------------------------------------------------------- plugin


class Disc21Metrics:
    """DISC21 micro-AP, R@P90 (+ threshold), recall@rank1/10; scorer "official" or "isc2021"."""

    version = "1"
    protocol = "disc21-official"

    def __init__(self, scorer: Scorer = "official") -> None:
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}, expected one of {SCORERS}")
        self.scorer = scorer
        self.protocol = f"disc21-{scorer}"

    def __call__(self, ground_truth: Disc21GroundTruth, retrieval) -> dict[str, float | None]:
        q, r, s = retrieval.predictions()
        result = score_predictions(q, r, s, ground_truth, scorer=self.scorer)
        result.pop("scorer")
        return result
