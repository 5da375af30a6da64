"""Active indexing's retrieval metrics (protocols.md §5, the reference's ``eval_retrieval``).

For each query with a ground-truth reference (its original), ``rank`` = the position (0-based) of that
reference in the query's ranking truncated to ``depth`` (100), or ``depth`` when it is not there.
``recall_at_k`` = fraction of queries with ``rank < k`` (R@1 is the paper's "Recall 1@1"); ``mrr`` =
mean of ``1 / (rank + 1)`` (so an absent original counts 1/101, as the reference's ``ap`` column).
Queries the ground truth pairs with no reference are not counted. The ranking is the index's order
(for kNN results, the row as returned; for pairs, score descending, ties in the index's output order).
``micro_ap`` is the DISC21 micro-AP of the same predictions (every returned (query, reference, score)),
computed by the DISC21 plugin's scorer (``official`` mode), so that one record holds the paper's columns.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.errors import UserError


def own_ranks(query_ids: np.ndarray, db_ids: np.ndarray, rankings: np.ndarray, gt: Any, depth: int) -> np.ndarray:
    """Per query paired by ``gt`` (``pair_query_ids`` -> ``pair_reference_ids``), in query order: the rank
    of its reference among the first ``depth`` rows of ``rankings`` (K, nq) (database rows, -1 padding)."""
    query_ids = np.asarray(query_ids, dtype=str)
    ref_of = dict(zip(np.asarray(gt.pair_query_ids, dtype=str).tolist(), np.asarray(gt.pair_reference_ids, dtype=str).tolist()))
    row_of = {r: i for i, r in enumerate(np.asarray(db_ids, dtype=str).tolist())}
    paired = np.array([q in ref_of for q in query_ids.tolist()], dtype=bool)
    expected = np.array([row_of.get(ref_of[q], -2) for q in query_ids[paired].tolist()], dtype=np.int64)  # -2: never matches
    top = np.asarray(rankings, dtype=np.int64)[:depth][:, paired]
    hit = top == expected[None, :]
    found = hit.any(axis=0)
    return np.where(found, hit.argmax(axis=0), depth).astype(np.int64)


class OwnRank:
    """Rank of each query's own original in its top-``depth``: recall@k for ``ks``, mean reciprocal rank, DISC21 micro-AP."""

    version = "1"
    protocol = "active-indexing-retrieval"
    display = {"n_*": "integer"}

    def __init__(self, ks: Sequence[int] = (1, 10, 100), depth: int = 100) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise UserError(f"metric active_indexing: depth must be a positive integer, got {depth!r}")
        ks = list(ks)
        bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= depth]
        if bad or not ks:
            raise UserError(f"metric active_indexing: ks must be integers in [1, depth={depth}], got {ks!r}")
        self.ks, self.depth = sorted(set(ks)), depth

    def __call__(self, ground_truth: Any, retrieval: Any) -> dict[str, float | None]:
        ranks = own_ranks(retrieval.query_ids, retrieval.db_ids, retrieval.rankings(), ground_truth, self.depth)
        n = len(ranks)
        out: dict[str, float | None] = {f"recall_at_{k}": (float(np.mean(ranks < k)) if n else None) for k in self.ks}
        out["mrr"] = float(np.mean(1.0 / (ranks + 1.0))) if n else None
        out["micro_ap"] = _micro_ap(ground_truth, retrieval)
        out["n_queries"] = n
        return out


def _micro_ap(ground_truth: Any, retrieval: Any) -> float:
    from harness_plugins.disc21.metrics import score_predictions

    q, r, s = retrieval.predictions()
    return float(score_predictions(q, r, s, ground_truth, scorer="official")["micro_ap"])


def summarize(records: Sequence[dict[str, Any]], values: Sequence[str]) -> dict[str, float | int | None]:
    """Means over cells: for each name in ``values``, the mean of the first metric record of each cell
    that has it (cells without it do not count); ``n_cells`` = the number of cells averaged."""
    out: dict[str, float | int | None] = {}
    for name in values:
        found = []
        for metrics in records:
            for record in metrics.values():
                v = record.get("values", {}).get(name)
                if name in record.get("values", {}):
                    if v is not None:
                        found.append(float(v))
                    break
        out[name] = float(np.mean(found)) if found else None
    out["n_cells"] = len(records)
    return out
