"""Exact inner-product top-k search with one excluded row per query and a fixed tie rule.

Composed retrieval removes each query's reference image from its own ranking (CIRR; SIMAT's "top-2
when the top-1 is the source"). Doing that inside the search (the source's score set to -inf) keeps
k results per query instead of k - 1. Ties: higher score first, then the lower database row, so the
result never depends on BLAS blocking or thread count beyond float32 rounding of the dot products.
Memory is bounded by ``block`` x database size float32 scores (1024 x 5,859: 24 MB).
"""

from __future__ import annotations

import numpy as np


def search_ip(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of shape (nq, k): the k database rows of largest inner product per query.

    ``exclude[q]`` (a database row, or -1 for none) never appears in query q's row. Rows with fewer
    than k candidates are padded with index -1 and score -inf. Inputs are used as float32.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    db = np.ascontiguousarray(database, dtype=np.float32)
    if q.ndim != 2 or db.ndim != 2 or (len(q) and q.shape[1] != db.shape[1]):
        raise ValueError(f"search: queries {q.shape} and database {db.shape} must be 2-D with equal d")
    if k < 1:
        raise ValueError(f"search: k must be >= 1 (got {k})")
    nq, nb = len(q), len(db)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (nq,):
            raise ValueError(f"search: exclude has shape {exclude.shape}, expected ({nq},)")
    indices = np.full((nq, k), -1, dtype=np.int64)
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    kk = min(k, nb)
    if nq == 0 or kk == 0:
        return indices, scores
    dbt = np.ascontiguousarray(db.T)
    for start in range(0, nq, block):
        s = q[start : start + block] @ dbt
        rows = np.arange(len(s))
        if exclude is not None:
            ex = exclude[start : start + len(s)]
            has = ex >= 0
            s[rows[has], ex[has]] = -np.inf
        idx, val = _topk(s, kk)
        indices[start : start + len(s), :kk] = idx
        scores[start : start + len(s), :kk] = val
    indices[np.isneginf(scores)] = -1  # excluded rows (only reached when k >= database size)
    return indices, scores


def _topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of ``s``, best first, ties by lower column."""
    nb = s.shape[1]
    if k >= nb:
        order = np.argsort(-s, axis=1, kind="stable")
        return order, np.take_along_axis(s, order, axis=1)
    part = np.argpartition(s, nb - k, axis=1)[:, nb - k :]
    vals = np.take_along_axis(s, part, axis=1)
    kth = vals.min(axis=1)
    # argpartition picks arbitrarily among values tied with the k-th: redo those rows in full
    straddle = np.flatnonzero((s >= kth[:, None]).sum(axis=1) > k)
    for r in straddle:
        order = np.argsort(-s[r], kind="stable")[:k]
        part[r], vals[r] = order, s[r, order]
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def composed_search(
    composer: object,
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    queries: object,
    db_ids: np.ndarray,
    k: int = 50,
) -> object:
    """prepare -> compose -> exact search with each query's source removed -> ComposedRetrieval.

    The whole composed-retrieval chain in one call (tests, benchmark, and a reference for the
    pipeline's stages, which cache ``prepare_images`` / ``prepare_texts`` apart from ``compose``)."""
    from .types import ComposedRetrieval

    images = composer.prepare_images(image_embeddings)  # type: ignore[attr-defined]
    texts = composer.prepare_texts(text_embeddings)  # type: ignore[attr-defined]
    q = composer.compose(images, texts, queries)  # type: ignore[attr-defined]
    indices, scores = search_ip(q, images, k, exclude=queries.source)  # type: ignore[attr-defined]
    return ComposedRetrieval(np.asarray(queries.ids), np.asarray(db_ids), indices, scores,  # type: ignore[attr-defined]
                             np.asarray(queries.source, dtype=np.int64))  # type: ignore[attr-defined]
