"""SIMAT's score (protocols.md §3), its labelled variants, and Recall@K for composed retrieval (§6).

Each metric is a pure function of (ground truth, :class:`ComposedRetrieval`). The source image is
removed from every ranking first (:meth:`ComposedRetrieval.ranking`), which is SIMAT's "top-2 when the
top-1 is the source" and CIRR's convention alike. ``table`` returns the per-query sidecar columns.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.errors import UserError

from .types import ComposedGroundTruth, ComposedRetrieval, SimatGroundTruth

#: The oracle threshold of the released eval.py: success iff the OSCAR score is strictly above it.
ORACLE_THRESHOLD = 0.5


def _check_alignment(query_ids: np.ndarray, retrieval: ComposedRetrieval) -> None:
    if len(query_ids) != len(retrieval.query_ids) or not np.array_equal(query_ids, retrieval.query_ids):
        raise UserError(f"retrieval holds {len(retrieval.query_ids)} queries that are not the ground truth's "
                        f"{len(query_ids)} in the same order")


def simat_outcomes(gt: SimatGroundTruth, retrieval: ComposedRetrieval, k: int = 1) -> dict[str, np.ndarray]:
    """Per query: the top-k rows after removing the source, their oracle values for the target
    caption, and whether any is a success (oracle > 0.5)."""
    _check_alignment(gt.query_ids, retrieval)
    if gt.oracle.shape[0] != len(retrieval.db_ids):
        raise UserError(f"retrieval searched {len(retrieval.db_ids)} images; the OSCAR matrix has {gt.oracle.shape[0]} rows")
    if not np.array_equal(gt.source, retrieval.source):
        q = int(np.flatnonzero(gt.source != retrieval.source)[0])
        raise UserError(f"retrieval: query {gt.query_ids[q]} has source row {retrieval.source[q]}, "
                        f"the ground truth says {gt.source[q]}")
    top = retrieval.ranking(k)
    oracle = np.full(top.shape, np.nan)
    ok = top >= 0
    rows, cols = np.nonzero(ok)
    oracle[rows, cols] = gt.oracle[top[rows, cols], gt.target_caption[rows]]
    success = (np.where(ok, oracle, -np.inf) > ORACLE_THRESHOLD).any(axis=1)
    return {"top": top, "oracle": oracle, "success": success}


def _weighted_percent(gt: SimatGroundTruth, success: np.ndarray) -> float | None:
    if not len(success):
        return None
    return float(100.0 * np.dot(gt.weights, success.astype(np.float64)))


class SimatScore:
    """SIMAT score: 100 x weighted top-1 oracle accuracy, source removed (the released protocol)."""

    protocol = "simat-top1-oracle"
    version = "1"
    input_type = "composed_retrieval"

    def __call__(self, ground_truth: SimatGroundTruth, retrieval: ComposedRetrieval) -> dict[str, Any]:
        out = simat_outcomes(ground_truth, retrieval, k=1)
        success = out["success"]
        return {
            "score": _weighted_percent(ground_truth, success),
            "unweighted_accuracy": float(100.0 * success.mean()) if len(success) else None,
            "queries": int(len(success)),
        }

    def table(self, ground_truth: SimatGroundTruth, retrieval: ComposedRetrieval) -> dict[str, np.ndarray]:
        """Per-query sidecar: query id, source id, retrieved id ('' if none), oracle value, success, weight."""
        out = simat_outcomes(ground_truth, retrieval, k=1)
        top = out["top"][:, 0]
        return {
            "query_id": ground_truth.query_ids,
            "source_id": retrieval.db_ids[ground_truth.source],
            "retrieved_id": np.where(top >= 0, retrieval.db_ids[np.maximum(top, 0)], ""),
            "oracle": out["oracle"][:, 0],
            "success": out["success"],
            "weight": ground_truth.weights,
        }


class SimatOracleRecall:
    """Oracle recall@k (labelled variant, not the released protocol): weighted share of queries with a
    success among the top k, source removed."""

    protocol = "simat-oracle-recall"
    version = "1"
    input_type = "composed_retrieval"

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise UserError(f"k must be >= 1 (got {k})")
        self.k = k

    def __call__(self, ground_truth: SimatGroundTruth, retrieval: ComposedRetrieval) -> dict[str, Any]:
        success = simat_outcomes(ground_truth, retrieval, k=self.k)["success"]
        return {f"recall@{self.k}": _weighted_percent(ground_truth, success), "queries": int(len(success))}


def max_over_grid(scores: dict[float, float | None]) -> dict[str, Any]:
    """The "max over a lambda sweep" variant (labelled, optimistic: lambda is chosen on the scored
    split): the best score and the smallest lambda reaching it."""
    known = {lam: s for lam, s in scores.items() if s is not None}
    if not known:
        return {"max_score": None, "best_lambda": None}
    best = max(known.values())
    return {"max_score": best, "best_lambda": min(lam for lam, s in known.items() if s == best)}


class ComposedRecall:
    """Recall@K of composed retrieval: share of queries with a target among the top K, reference removed."""

    protocol = "composed-recall"
    version = "1"
    input_type = "composed_retrieval"

    def __init__(self, ks: Sequence[int] = (1, 5, 10, 50)) -> None:
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1:
            raise UserError(f"ks must be a non-empty list of integers >= 1 (got {list(ks)})")
        self.ks = ks

    def hits(self, ground_truth: ComposedGroundTruth, retrieval: ComposedRetrieval) -> np.ndarray:
        """(nq,) 0-based rank of the first target after reference removal, or -1 when none in the
        top max(ks)."""
        _check_alignment(ground_truth.query_ids, retrieval)
        kmax = max(self.ks)
        top = retrieval.ranking(kmax)
        nq = len(top)
        counts = np.diff(ground_truth.target_ptr)
        qrow = np.repeat(np.arange(nq), counts)
        # is top[q, j] a target of q? compare each target with the row (targets per query are few)
        is_target = np.zeros(top.shape, dtype=bool)
        if len(qrow):
            match = top[qrow] == ground_truth.target_rows[:, None]  # (n_targets, kmax)
            np.logical_or.at(is_target, qrow, match)
        any_hit = is_target.any(axis=1)
        return np.where(any_hit, np.argmax(is_target, axis=1), -1)

    def __call__(self, ground_truth: ComposedGroundTruth, retrieval: ComposedRetrieval) -> dict[str, Any]:
        first = self.hits(ground_truth, retrieval)
        out: dict[str, Any] = {}
        for k in self.ks:
            out[f"recall@{k}"] = float(((first >= 0) & (first < k)).mean()) if len(first) else None
        out["queries"] = int(len(first))
        return out

    def table(self, ground_truth: ComposedGroundTruth, retrieval: ComposedRetrieval) -> dict[str, np.ndarray]:
        """Per-query sidecar: query id, top-1 id after reference removal, rank of the first target (-1: none)."""
        first = self.hits(ground_truth, retrieval)
        top = retrieval.ranking(1)[:, 0]
        return {
            "query_id": ground_truth.query_ids,
            "retrieved_id": np.where(top >= 0, retrieval.db_ids[np.maximum(top, 0)], ""),
            "first_target_rank": first,
        }
