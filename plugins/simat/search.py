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


#: Up to this k, top-k is k passes of argmax (vectorised, and argmax returns the first maximum, which
#: is the tie rule); beyond it, one argpartition.
_ARGMAX_K = 8


def _topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of ``s``, best first, ties by lower column. May overwrite ``s``."""
    nb = s.shape[1]
    if k <= _ARGMAX_K and k < nb:
        rows = np.arange(len(s))
        idx = np.empty((len(s), k), dtype=np.int64)
        val = np.empty((len(s), k), dtype=s.dtype)
        for j in range(k):
            a = s.argmax(axis=1)
            idx[:, j] = a
            val[:, j] = s[rows, a]
            s[rows, a] = -np.inf
        return idx, val
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
    gram_matrix: np.ndarray | None = None,
) -> object:
    """prepare -> compose -> exact search with each query's source removed -> ComposedRetrieval.

    The whole composed-retrieval chain in one call (tests, benchmark, and a reference for the
    pipeline's stages, which cache ``prepare_images`` / ``prepare_texts`` apart from ``compose``).
    Linear composers (those with ``coefficients()``) are searched by :func:`search_linear`, which
    never forms the query vectors; ``gram_matrix`` (:func:`gram` of the prepared images) may be
    passed to share it across a lambda grid."""
    from .types import ComposedRetrieval

    images = composer.prepare_images(image_embeddings)  # type: ignore[attr-defined]
    texts = composer.prepare_texts(text_embeddings)  # type: ignore[attr-defined]
    source = np.asarray(queries.source, dtype=np.int64)  # type: ignore[attr-defined]
    if callable(getattr(composer, "coefficients", None)):
        composer.check(images, texts, queries)  # type: ignore[attr-defined]
        indices, scores = search_linear(images, texts, queries, composer.coefficients(), k,  # type: ignore[attr-defined]
                                        gram_matrix=gram_matrix)
    else:
        q = composer.compose(images, texts, queries)  # type: ignore[attr-defined]
        indices, scores = search_ip(q, images, k, exclude=source)
    return ComposedRetrieval(np.asarray(queries.ids), np.asarray(db_ids), indices, scores, source)  # type: ignore[attr-defined]


#: Most entries of the source-image rows of the Gram matrix :func:`search_linear` keeps (float32:
#: 64M = 256 MB; SIMAT's 5,859 images need 34M); beyond it the queries are composed and searched
#: directly, block by block.
GRAM_MAX_ENTRIES = 64 * 1024 * 1024


def gram(images: np.ndarray) -> np.ndarray:
    """I I^T of the prepared database (float32): lambda-independent, so a lambda grid computes it once."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    return x @ x.T


def search_linear(
    images: np.ndarray,
    texts: np.ndarray,
    queries: object,
    coefficients: np.ndarray,
    k: int,
    gram_matrix: np.ndarray | None = None,
    block: int = 128,
    text_products: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_ip` for linear composers, q = I[src] + sum_j c_j T[text_j], without composing q.

    Scores q . I = (I I^T)[src] + sum_j c_j (T I^T)[text_j]: the database Gram matrix (lambda-free)
    and the text-image products of the texts in use (a few hundred rows for SIMAT) replace the
    (nq x d) x (d x nb) product per lambda by row gathers. Same tie rule as :func:`search_ip`; the
    scores equal it up to float32 rounding of the sums. The source is always excluded.
    ``gram_matrix`` (:func:`gram`) and ``text_products`` (T I^T for all texts) are lambda-free:
    a lambda grid computes them once and passes them to every cell.
    """
    img = np.ascontiguousarray(images, dtype=np.float32)
    nb = len(img)
    source = np.asarray(queries.source, dtype=np.int64)  # type: ignore[attr-defined]
    text_index = np.asarray(queries.text_index, dtype=np.int64)  # type: ignore[attr-defined]
    coefficients = np.asarray(coefficients, dtype=np.float32)
    if coefficients.shape != (text_index.shape[1],):
        raise ValueError(f"search: {coefficients.shape} coefficients for {text_index.shape[1]} texts per query")
    nq = len(source)
    indices = np.full((nq, k), -1, dtype=np.int64)
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    kk = min(k, nb)
    if nq == 0 or kk == 0:
        return indices, scores
    if gram_matrix is not None:
        if gram_matrix.shape != (nb, nb):
            raise ValueError(f"search: Gram matrix {gram_matrix.shape} for {nb} images")
        g, g_row = gram_matrix, source
    else:
        # only the sources' rows are needed; the full matrix (a symmetric product: half the work per
        # row) is cheaper once more than half of the images are sources
        used_src, g_row = np.unique(source, return_inverse=True)
        if len(used_src) * nb > GRAM_MAX_ENTRIES:
            q = img[source]
            for j, c in enumerate(coefficients):
                q += c * np.asarray(texts, dtype=np.float32)[text_index[:, j]]
            return search_ip(q, img, k, exclude=source)
        if 2 * len(used_src) > nb:
            g, g_row = gram(img), source
        else:
            g = img[used_src] @ img.T
    if text_products is not None:
        if text_products.shape != (len(texts), nb):
            raise ValueError(f"search: text products {text_products.shape} for {len(texts)} texts, {nb} images")
        w, local = text_products, text_index
    else:
        used, local = np.unique(text_index, return_inverse=True)
        local = local.reshape(text_index.shape)
        w = np.asarray(texts, dtype=np.float32)[used] @ img.T  # (n_used, nb)
    # reused scratch: fresh pages for every block cost as much as the arithmetic
    s_buf = np.empty((min(block, nq), nb), dtype=np.float32)
    t_buf = np.empty_like(s_buf)
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        src = source[start:stop]
        s, tmp = s_buf[: stop - start], t_buf[: stop - start]
        np.take(g, g_row[start:stop], axis=0, out=s)
        for j, c in enumerate(coefficients):
            if c != 0:
                np.take(w, local[start:stop, j], axis=0, out=tmp)
                tmp *= c
                s += tmp
        s[np.arange(len(s)), src] = -np.inf
        idx, val = _topk(s, kk)
        indices[start:stop, :kk] = idx
        scores[start:stop, :kk] = val
    indices[np.isneginf(scores)] = -1
    return indices, scores
