"""Exact, streaming similarity search on top of faiss: per-query kNN, global top-K and range search.

Used by the ``faiss`` index plugin (factory ``Flat``) and by the DISC21 descriptor-track scorer.

Conventions shared by every function here:

- ``metric="l2"``: score = -squared L2 distance; ``metric="ip"``: score = inner product. Higher is
  better, as in :class:`harness.parts.Neighbors`.
- The database is streamed in blocks of ``block_size`` rows, each searched with ``faiss.knn`` (all
  cores, BLAS), so the extra memory is O(K + nq * k_block) for a small per-block depth
  k_block, never O(nq * nb).
- Ties are deterministic and independent of ``block_size``: among equal scores, the lower query
  index wins, then the lower database index. The functions guarantee this even where faiss picks
  arbitrarily among tied candidates, by asking faiss for more neighbours of the affected queries
  until the tie is fully visible.
- Inputs are converted to C-contiguous float32 (no copy when they already are, e.g. a float32
  ``np.memmap``); they must be finite (the submission readers reject NaN/inf beforehand).
- ``device`` (kNN and global top-K): ``cpu`` (the default), ``gpu`` or ``auto`` (see :mod:`.gpu`):
  on a GPU each block is searched by a ``GpuIndexFlat``; the streaming and tie rules are the same.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from harness.parts import Neighbors

from .gpu import gpu_block_search, resolve

#: (scores, indices) of one search call: arrays of shape (rows, kk), best first, index -1 = padding.
KnnFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]

_METRICS = ("l2", "ip")


def global_top_k(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: str = "l2",
    block_size: int = 65536,
    progress: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> Neighbors:
    """The ``k`` best (query, database) pairs over all ``nq x nb`` pairs (DISC21 descriptor track).

    Returns pairs-form :class:`Neighbors` sorted by score descending, then query index, then
    database index; a query may get 0 or many pairs. ``k >= nq * nb`` returns every pair.

    How: each database block is searched with ``faiss.knn`` for a few neighbours per query
    (``2 k / nq`` at first, see :func:`_first_depth`); a running global top-K gives the current
    K-th best score ``tau``. A query whose last returned neighbour still scores ``>= tau`` may have
    more qualifying pairs in the block, so only those queries are searched again with 4x more
    neighbours, until none is "saturated", and they keep that depth for the next blocks. The
    result is exact. Extra memory: the running top-K plus one block's candidates, about
    O(k + nq * depth). ``progress(rows)`` is called after each block with the
    number of database rows it held.
    """
    queries, database = _check_inputs(queries, database, metric)
    k = _check_count(k, "k")
    nq, nb = len(queries), len(database)
    if k == 0 or nq == 0 or nb == 0:
        return _empty_pairs()
    on = resolve(device, what="global top-K")
    state = _TopK(k, nb)
    depth = np.full(nq, _first_depth(k, nq), dtype=np.int64)  # per query, grows where needed
    for b0, block in _blocks(database, block_size, progress):
        state.add_source(_flat_knn_fn(queries, block, metric, offset=b0, device=on), depth, kmax=len(block))
    return state.result()


def global_top_k_from_knn(search: KnnFn, nq: int, nb: int, k: int, *, k0: int | None = None) -> Neighbors:
    """Global top-K over the per-query rankings of any kNN search function (approximate indexes).

    ``search(rows, kk)`` returns ``(scores, indices)`` of shape ``(len(rows), kk)`` for the queries
    ``rows``, best first, ``-1`` padding. The answer is the top-K over the union of every query's
    whole ranking (as deep as the index returns results), found with the same saturation rule as
    :func:`global_top_k`; ties as there.
    """
    k = _check_count(k, "k")
    if k == 0 or nq == 0 or nb == 0:
        return _empty_pairs()
    state = _TopK(k, nb)
    state.add_source(search, np.full(nq, k0 or _first_depth(k, nq), dtype=np.int64), kmax=nb)
    return state.result()


def knn_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: str = "l2",
    block_size: int = 65536,
    progress: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> Neighbors:
    """Exact per-query kNN: knn-form :class:`Neighbors` of shape ``(nq, k)``, rows best first.

    Ties are broken by the lower database index. Rows are padded with index ``-1`` and score
    ``-inf`` when ``k > nb``. ``progress(rows)`` is called after each database block.
    """
    queries, database = _check_inputs(queries, database, metric)
    k = _check_count(k, "k")
    nq, nb = len(queries), len(database)
    on = resolve(device, what="kNN search")
    best_s = np.empty((nq, 0), dtype=np.float32)
    best_i = np.empty((nq, 0), dtype=np.int64)
    if nq and k:
        for b0, block in _blocks(database, block_size, progress):
            s, i = _block_topk(_flat_knn_fn(queries, block, metric, offset=b0, device=on), nq, k, len(block))
            if best_s.shape[1] == 0:  # first block: already in (score desc, index asc) order
                best_s, best_i = s, i
            else:
                best_s, best_i = _row_topk(np.hstack([best_s, s]), np.hstack([best_i, i]), k)
    pad = k - best_s.shape[1]
    if pad > 0:
        best_s = np.hstack([best_s, np.full((nq, pad), -np.inf, dtype=np.float32)])
        best_i = np.hstack([best_i, np.full((nq, pad), -1, dtype=np.int64)])
    return Neighbors.knn(best_i, best_s)


def range_search(
    queries: np.ndarray,
    database: np.ndarray,
    threshold: float,
    *,
    metric: str = "l2",
    block_size: int = 65536,
) -> Neighbors:
    """All pairs within ``threshold``, faiss's convention: squared L2 distance ``< threshold`` for
    ``l2``, inner product ``> threshold`` for ``ip``.

    Pairs form, sorted by query index, then score descending, then database index.
    """
    import faiss

    queries, database = _check_inputs(queries, database, metric)
    nq, d = queries.shape
    if nq == 0 or len(database) == 0:
        return _empty_pairs()
    fn = faiss.range_search_L2sqr if metric == "l2" else faiss.range_search_inner_product
    parts_q, parts_r, parts_s = [], [], []
    for b0, block in _blocks(database, block_size):
        res = faiss.RangeSearchResult(nq)
        fn(faiss.swig_ptr(queries), faiss.swig_ptr(block), d, nq, len(block), float(threshold), res)
        lims = faiss.rev_swig_ptr(res.lims, nq + 1).astype(np.int64)
        n = int(lims[-1])
        dist = faiss.rev_swig_ptr(res.distances, n).copy() if n else np.empty(0, np.float32)
        labels = faiss.rev_swig_ptr(res.labels, n).copy() if n else np.empty(0, np.int64)
        parts_q.append(np.repeat(np.arange(nq, dtype=np.int64), np.diff(lims)))
        parts_r.append(labels.astype(np.int64) + b0)
        parts_s.append(to_scores(dist, similarity=metric == "ip"))
    q, r, s = np.concatenate(parts_q), np.concatenate(parts_r), np.concatenate(parts_s).astype(np.float32)
    order = np.lexsort((r, -s, q))
    return Neighbors.pairs(q[order], r[order], s[order])


# --------------------------------------------------------------------------------------------------
# internals


def _check_inputs(queries: np.ndarray, database: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if queries.ndim != 2 or database.ndim != 2:
        raise ValueError(f"queries {queries.shape} and database {database.shape} must be 2-D")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"dimension mismatch: queries have d={queries.shape[1]}, database d={database.shape[1]}")
    return queries, database


def _check_count(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _blocks(
    database: np.ndarray, block_size: int, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of each database block; ``progress(rows)`` once the caller is done with it."""
    block_size = _check_count(block_size, "block_size", minimum=1)
    for b0 in range(0, len(database), block_size):
        block = database[b0 : b0 + block_size]
        yield b0, block
        if progress is not None:
            progress(len(block))


def to_scores(dist: np.ndarray, *, similarity: bool) -> np.ndarray:
    """faiss distances -> higher-is-better scores: unchanged for a similarity (inner product), negated
    for a distance (squared L2, Hamming)."""
    return dist if similarity else -dist


def mask_padding(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """float32 scores with -inf where faiss padded the result (index -1)."""
    return np.where(idx >= 0, scores, np.float32(-np.inf)).astype(np.float32, copy=False)


def _empty_pairs() -> Neighbors:
    return Neighbors.pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


def _first_depth(k: int, nq: int) -> int:
    """Neighbours asked per query in the first block: twice the average share ceil(k / nq), at
    least 16. Queries that need more are found (saturation) and go deeper from then on; asking
    everyone for more costs faiss heap work (a few percent at k = 80 vs 16, measured)."""
    return max(16, 2 * -(-k // nq))


def _flat_knn_fn(queries: np.ndarray, block: np.ndarray, metric: str, offset: int, device: str = "cpu") -> KnnFn:
    """search(rows, kk) over one database block, exact (faiss.knn, or the block in a GpuIndexFlat
    when ``device`` is ``gpu``); indices are global rows."""
    import faiss

    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def on_cpu(xq: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(xq, block, kk, metric=fmetric)

    knn = on_cpu if device == "cpu" else gpu_block_search(queries, block, metric, on_cpu)

    def search(rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        xq = queries if len(rows) == len(queries) else np.ascontiguousarray(queries[rows])
        dist, idx = knn(xq, kk)
        return to_scores(dist, similarity=metric == "ip"), np.where(idx >= 0, idx + offset, -1)

    return search


def _row_topk(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best by (score desc, index asc); padding (-1) sorts last."""
    key_idx = np.where(idx >= 0, idx, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, -scores.astype(np.float64)), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def _block_topk(search: KnnFn, nq: int, k: int, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-query top-k of one source with ties broken by index.

    Asks for k + 1 neighbours: when the (k+1)-th equals the k-th score, faiss may have dropped a
    tied lower index, so those queries are searched again deeper until the boundary is strict.
    """
    kout = min(k, nrows)
    kk = min(k + 1, nrows)
    rows = np.arange(nq)
    out_s = np.empty((nq, kout), np.float32)
    out_i = np.empty((nq, kout), np.int64)
    while len(rows):
        s, i = search(rows, kk)
        s = mask_padding(s, i)
        if kout < kk < nrows:
            open_ = (s[:, kk - 1] == s[:, kout - 1]) & (i[:, kk - 1] >= 0)
        else:
            open_ = np.zeros(len(rows), bool)
        done = ~open_
        out_s[rows[done]], out_i[rows[done]] = _row_topk(s[done], i[done], kout)
        rows = rows[open_]
        kk = min(nrows, kk * 4)
    return out_s, out_i


class _TopK:
    """Running global top-K of (q, r, score) with the deterministic tie rule."""

    def __init__(self, k: int, nb: int) -> None:
        self.k, self.nb = k, nb
        self.q = np.empty(0, np.int64)
        self.r = np.empty(0, np.int64)
        self.s = np.empty(0, np.float32)

    def _select(self, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Positions of the k best by (score desc, q asc, r asc), unordered."""
        n, k = len(s), self.k
        if n <= k:
            return np.arange(n)
        thr = s[np.argpartition(-s, k - 1)[k - 1]]
        above = np.flatnonzero(s > thr)
        tied = np.flatnonzero(s == thr)
        need = k - len(above)
        if need < len(tied):
            key = q[tied] * self.nb + r[tied]
            tied = tied[np.argpartition(key, need - 1)[:need]]
        return np.concatenate([above, tied])

    def _threshold(self, extra_s: np.ndarray) -> float:
        """Current K-th best score over kept pairs plus ``extra_s`` (-inf while fewer than K)."""
        s = np.concatenate([self.s, extra_s])
        if len(s) < self.k:
            return -np.inf
        return float(s[np.argpartition(-s, self.k - 1)[self.k - 1]])

    def _merge(self, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> None:
        q, r, s = np.concatenate([self.q, q]), np.concatenate([self.r, r]), np.concatenate([self.s, s])
        keep = self._select(q, r, s)
        self.q, self.r, self.s = q[keep], r[keep], s[keep]

    def add_source(self, search: KnnFn, depth: np.ndarray, kmax: int) -> None:
        """Merge every pair of one source (a database block) that can enter the top-K.

        ``depth[q]`` is how many neighbours to ask for query q first; queries are searched in
        groups of equal depth. A query is saturated when it got ``kk < kmax`` real neighbours and
        its last one scores ``>= tau`` (ties included: a tied pair may still win on (q, r)); only
        saturated queries are searched again, 4x deeper, and their ``depth`` grows in place, so
        that "hot" queries start deeper in the next block. Any tau used here is the K-th best of a
        set of real, distinct pairs, hence never above the final threshold: the result is exact
        whatever the grouping.
        """
        pending = [(np.flatnonzero(depth == kk), int(kk)) for kk in np.unique(depth)]
        while pending:
            rows, kk = pending.pop()
            kk = min(kk, kmax)
            s, i = search(rows, kk)
            s = mask_padding(s, i)
            valid = i >= 0
            tau = self._threshold(s[valid])
            saturated = (kk < kmax) & valid[:, -1] & (s[:, -1] >= tau)
            done = ~saturated
            dv = valid[done]
            qq = np.broadcast_to(rows[done, None], dv.shape)[dv]
            self._merge(qq, i[done][dv], s[done][dv])
            if saturated.any():
                deeper = min(kmax, kk * 4)
                depth[rows[saturated]] = np.maximum(depth[rows[saturated]], deeper)
                pending.append((rows[saturated], deeper))

    def result(self) -> Neighbors:
        order = np.lexsort((self.r, self.q, -self.s.astype(np.float64)))
        return Neighbors.pairs(self.q[order], self.r[order], self.s[order])
