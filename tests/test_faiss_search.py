"""Exact streaming search (plugins/faiss/search.py) against brute-force numpy references."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness_plugins.faiss.search as search_module
from harness_plugins.faiss.search import global_top_k, global_top_k_from_knn, knn_search, range_search


def brute_scores(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    xq, xb = xq.astype(np.float64), xb.astype(np.float64)
    if metric == "ip":
        return xq @ xb.T
    return -((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)


def brute_global(xq, xb, k, metric="l2"):
    """All pairs sorted by (score desc, q asc, r asc), first k."""
    s = brute_scores(xq, xb, metric)
    nq, nb = s.shape
    q = np.repeat(np.arange(nq), nb)
    r = np.tile(np.arange(nb), nq)
    flat = s.ravel()
    order = sorted(range(len(flat)), key=lambda i: (-flat[i], q[i], r[i]))[:k]  # slow on purpose
    return q[order], r[order], flat[order]


def small_int_data(rng, n, d, high=3):
    """Small integers: distances are exact in float32 whatever the BLAS path, and ties abound."""
    return rng.integers(0, high, (n, d)).astype(np.float32)


def assert_pairs_equal(nb, q, r, s):
    assert np.array_equal(nb.q, q)
    assert np.array_equal(nb.r, r)
    np.testing.assert_allclose(nb.score, s, rtol=1e-5, atol=1e-4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nq=st.integers(1, 12),
    nb=st.integers(1, 40),
    d=st.integers(1, 6),
    k=st.integers(0, 600),
    block=st.integers(1, 50),
    metric=st.sampled_from(["l2", "ip"]),
    first_depth=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_global_top_k_matches_brute_force_with_ties(nq, nb, d, k, block, metric, first_depth, seed):
    rng = np.random.default_rng(seed)
    xq, xb = small_int_data(rng, nq, d), small_int_data(rng, nb, d)
    if first_depth is None:
        got = global_top_k(xq, xb, k, metric=metric, block_size=block)
    else:  # a tiny first depth exercises the "saturated query, search deeper" path on every block
        with mock.patch.object(search_module, "_first_depth", lambda k, nq: first_depth):
            got = global_top_k(xq, xb, k, metric=metric, block_size=block)
    assert_pairs_equal(got, *brute_global(xq, xb, k, metric))


def test_global_top_k_float_data_blocks_smaller_than_k():
    rng = np.random.default_rng(1)
    xq = rng.standard_normal((30, 8)).astype(np.float32)
    xb = rng.standard_normal((500, 8)).astype(np.float32)
    k = 2000  # > block size, and many pairs of one query per block
    got = global_top_k(xq, xb, k, block_size=64)
    q, r, s = brute_global(xq, xb, k)
    # Float data: tiny rounding differences may swap near-equal scores, so compare as sets.
    assert len(got.q) == k
    assert set(zip(got.q.tolist(), got.r.tolist())) == set(zip(q.tolist(), r.tolist()))
    assert np.all(np.diff(got.score) <= 0)


def test_global_top_k_concentrated_on_one_query():
    """One query near many references must get all of them (not a per-query cap)."""
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((300, 4)).astype(np.float32) * 10
    xb[:200] = 0.01 * rng.standard_normal((200, 4))  # 200 references right at query 0
    xq = np.vstack([np.zeros((1, 4)), 50 + rng.standard_normal((9, 4))]).astype(np.float32)
    got = global_top_k(xq, xb, 200, block_size=32)
    assert np.all(got.q == 0)
    assert set(got.r.tolist()) == set(range(200))


def test_global_top_k_everything_and_edge_cases():
    rng = np.random.default_rng(3)
    xq, xb = small_int_data(rng, 4, 3), small_int_data(rng, 5, 3)
    for k in (20, 21, 10**6):  # k >= nq * nb returns every pair
        got = global_top_k(xq, xb, k, block_size=2)
        assert_pairs_equal(got, *brute_global(xq, xb, 20))
    assert len(global_top_k(xq, xb, 0).q) == 0
    empty = np.empty((0, 3), np.float32)
    assert len(global_top_k(empty, xb, 10).q) == 0
    assert len(global_top_k(xq, empty, 10).q) == 0
    with pytest.raises(ValueError):
        global_top_k(xq, xb, -1)
    with pytest.raises(ValueError):
        global_top_k(xq, np.zeros((3, 4), np.float32), 1)


def test_global_top_k_reports_progress_and_accepts_memmap(tmp_path):
    rng = np.random.default_rng(4)
    xb = rng.standard_normal((100, 4)).astype(np.float32)
    path = tmp_path / "db.npy"
    np.save(path, xb)
    mm = np.load(path, mmap_mode="r")
    seen: list[int] = []
    got = global_top_k(xb[:5], mm, 7, block_size=30, progress=seen.append)
    assert seen == [30, 30, 30, 10]
    assert np.array_equal(got.r[:5], np.arange(5))  # each query's exact self-match (score 0) comes first


@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(1, 10),
    nb=st.integers(1, 30),
    k=st.integers(1, 40),
    block=st.integers(1, 30),
    metric=st.sampled_from(["l2", "ip"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_knn_search_matches_brute_force(nq, nb, k, block, metric, seed):
    rng = np.random.default_rng(seed)
    xq, xb = small_int_data(rng, nq, 3), small_int_data(rng, nb, 3)
    got = knn_search(xq, xb, k, metric=metric, block_size=block)
    s = brute_scores(xq, xb, metric)
    assert got.indices.shape == (nq, k)
    for i in range(nq):  # slow reference: sort each row by (score desc, index asc)
        ref = sorted(range(nb), key=lambda j: (-s[i, j], j))[:k]
        assert got.indices[i, : len(ref)].tolist() == ref
        np.testing.assert_allclose(got.scores[i, : len(ref)], s[i, ref], atol=1e-4)
        assert np.all(got.indices[i, len(ref) :] == -1)
        assert np.all(np.isneginf(got.scores[i, len(ref) :]))


@settings(max_examples=40, deadline=None)
@given(
    nq=st.integers(1, 8),
    nb=st.integers(1, 30),
    threshold=st.integers(-2, 12),
    block=st.integers(1, 30),
    metric=st.sampled_from(["l2", "ip"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_range_search_matches_brute_force(nq, nb, threshold, block, metric, seed):
    rng = np.random.default_rng(seed)
    xq, xb = small_int_data(rng, nq, 3), small_int_data(rng, nb, 3)
    # Half-integer thresholds: no pair sits exactly on the boundary, so < and <= agree.
    t = threshold + 0.5
    got = range_search(xq, xb, t, metric=metric, block_size=block)
    s = brute_scores(xq, xb, metric)
    keep = (-s < t) if metric == "l2" else (s > t)
    ref = sorted(((i, j) for i, j in zip(*np.nonzero(keep))), key=lambda p: (p[0], -s[p], p[1]))
    assert list(zip(got.q.tolist(), got.r.tolist())) == [(int(i), int(j)) for i, j in ref]
    np.testing.assert_allclose(got.score, [s[p] for p in ref], atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 130), k0=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_global_top_k_from_knn_on_a_ranking_function(k, k0, seed):
    """The generic form (approximate indexes) selects over each query's whole ranking."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, (6, 20)).astype(np.float32)

    def search(rows, kk):
        order = np.lexsort((np.broadcast_to(np.arange(20), (len(rows), 20)), -scores[rows]), axis=-1)[:, :kk]
        return np.take_along_axis(scores[rows], order, 1), order

    got = global_top_k_from_knn(search, 6, 20, k, k0=k0)
    q, r = np.nonzero(np.ones_like(scores, bool))
    order = sorted(range(120), key=lambda i: (-scores[q[i], r[i]], q[i], r[i]))[:k]
    assert list(zip(got.q.tolist(), got.r.tolist())) == [(q[i], r[i]) for i in order]
