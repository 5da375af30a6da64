"""The faiss index plugin (plugins/faiss/index.py): exact Flat, factory strings, training, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UserError
from harness.parts import Index, Neighbors
from harness_plugins.faiss.index import FaissIndex, SearchMode


@pytest.fixture(scope="module")
def data():
    """Clustered data (so that IVF / PQ behave as on real descriptors) and near-copy queries."""
    rng = np.random.default_rng(0)
    d = 32
    centers = rng.standard_normal((20, d)) * 4
    xt = (centers[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, d))).astype(np.float32)
    xb = (centers[rng.integers(0, 20, 1500)] + rng.standard_normal((1500, d))).astype(np.float32)
    xq = (xb[:60] + 0.05 * rng.standard_normal((60, d))).astype(np.float32)
    return xt, xb, xq


def brute_knn(xq, xb, k):
    dist = ((xq[:, None].astype(np.float64) - xb[None]) ** 2).sum(-1)
    return np.argsort(dist, axis=1, kind="stable")[:, :k], -np.sort(dist, axis=1)[:, :k]


def build(factory, data, n_train=4000, **kw):
    xt, xb, _ = data
    index = FaissIndex(factory, **kw)
    index.train(xt[:n_train])
    index.add(xb)
    return index


def test_flat_is_exact_and_follows_the_contract(data):
    _, xb, xq = data
    index = build("Flat", data, search={"k": 7})
    assert isinstance(index, Index)
    assert not index.needs_training
    got = index.search(xq)
    ref_i, ref_s = brute_knn(xq, xb, 7)
    assert got.form == "knn" and got.indices.shape == (60, 7)
    assert np.array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.scores, ref_s, rtol=1e-4, atol=1e-3)


def test_flat_global_top_k_auto_and_range(data):
    _, xb, xq = data
    auto = build("Flat", data, search={"global_top_k": "auto", "per_query": 3}).search(xq)
    assert auto.form == "pairs" and len(auto.q) == 3 * len(xq)
    dist = ((xq[:, None].astype(np.float64) - xb[None]) ** 2).sum(-1)
    threshold = np.sort(dist.ravel())[3 * len(xq) - 1]
    assert np.all(-auto.score <= threshold * (1 + 1e-4))
    fixed = build("Flat", data, search={"global_top_k": 100}).search(xq)
    assert len(fixed.q) == 100
    ranged = build("Flat", data, search={"range": 1.0}).search(xq)
    assert set(zip(ranged.q.tolist(), ranged.r.tolist())) == set(zip(*np.nonzero(dist < 1.0)))


def test_flat_inner_product(data):
    _, xb, xq = data
    got = build("Flat", data, metric="ip", search={"k": 3}).search(xq)
    ip = xq.astype(np.float64) @ xb.T.astype(np.float64)
    assert np.array_equal(got.indices, np.argsort(-ip, axis=1, kind="stable")[:, :3])


@pytest.mark.parametrize(
    "factory, params",
    [
        ("IVF16,Flat", {"nprobe": 4}),
        ("IVF16,PQ8x4", {"nprobe": 4}),
        ("OPQ4_16,IVF16,PQ4x4", {}),
        ("PCA16,LSH", {}),
        ("HNSW16", {"efSearch": 32}),
    ],
)
def test_factory_strings_build_train_and_search(factory, params, data):
    _, xb, xq = data
    index = build(factory, data, n_train=1000, search={"k": 10}, **params)  # small: OPQ training is slow
    assert index.ntotal == len(xb)
    got = index.search(xq)
    assert got.indices.shape == (60, 10)
    assert np.all(np.diff(got.scores, axis=1) <= 1e-6)  # best first, higher = better
    # Queries are near-copies of xb[:60]: even a compressed index should find most of them first.
    assert np.mean(got.indices[:, 0] == np.arange(60)) >= 0.6
    index.mode = SearchMode.parse({"global_top_k": 120})  # same trained index, other output
    g = index.search(xq)
    assert len(g.q) == 120 and np.all(np.diff(g.score) <= 0)


def test_approximate_global_top_k_covers_each_query_ranking(data):
    """Global top-K on an IVF index = top-K over the union of the index's per-query rankings."""
    _, xb, xq = data
    knn = build("IVF16,Flat", data, nprobe=2, search={"k": len(xb)}).search(xq)
    q, r, s = knn.as_pairs()
    order = np.lexsort((r, q, -s))[:200]
    glob = build("IVF16,Flat", data, nprobe=2, search={"global_top_k": 200}).search(xq)
    assert set(zip(glob.q.tolist(), glob.r.tolist())) == set(zip(q[order].tolist(), r[order].tolist()))


def test_nprobe_increases_recall(data):
    _, xb, xq = data
    ref_i, _ = brute_knn(xq, xb, 10)

    def recall(nprobe):
        got = build("IVF16,Flat", data, nprobe=nprobe, search={"k": 10}).search(xq)
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.indices, ref_i)])

    low, high = recall(1), recall(16)
    assert high == pytest.approx(1.0)  # every list probed: IVF-Flat is exact
    assert low < high


def test_save_load_round_trip(tmp_path, data):
    _, _, xq = data
    for factory, params in (("Flat", {}), ("IVF16,PQ8x4", {"nprobe": 3})):
        index = build(factory, data, n_train=1000, search={"k": 5}, **params)
        path = tmp_path / f"{factory.replace(',', '_')}.faissindex"
        index.save(path)
        loaded = FaissIndex(factory, search={"k": 5}, **params)
        loaded.load(path)
        a, b = index.search(xq), loaded.search(xq)
        assert np.array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.scores, b.scores)
    wrong = FaissIndex("Flat", metric="ip")
    with pytest.raises(UserError, match="metric"):
        wrong.load(tmp_path / "Flat.faissindex")
    # A file of another factory whose index lacks the configured parameter: one-line UserError.
    build("HNSW8", data, search={"k": 5}).save(tmp_path / "hnsw.faissindex")
    with pytest.raises(UserError, match="nprobe does not apply") as err:
        FaissIndex("IVF16,PQ8x4", nprobe=3).load(tmp_path / "hnsw.faissindex")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factory": "IVF16,Bogus"}, "invalid factory string 'IVF16,Bogus'"),
        ({"factory": "PCA16,LSH", "metric": "ip"}, "invalid factory string 'PCA16,LSH'"),
        ({"factory": "Flat", "nprobe": 4}, "nprobe does not apply to factory 'Flat'"),
        ({"factory": "HNSW32", "nprobe": 4}, "nprobe does not apply to factory 'HNSW32'"),
        ({"factory": "IVF16,Flat", "efSearch": 4}, "efSearch does not apply"),
        ({"metric": "cosine"}, "metric must be"),
        ({"search": {"kk": 3}}, "unknown key 'kk'"),
        ({"search": {"k": 3, "range": 1.0}}, "exactly one of"),
        ({"search": {"k": 0}}, "positive integer"),
        ({"search": {"global_top_k": 10, "per_query": 3}}, "per_query only goes with"),
        ({"search": {"range": "near"}}, "finite number"),
    ],
)
def test_clear_errors_at_construction(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        FaissIndex(**kwargs)


def test_missing_or_insufficient_training_data(data):
    xt, xb, _ = data
    index = FaissIndex("IVF64,Flat")
    assert index.needs_training
    with pytest.raises(UserError, match="needs training data"):
        index.add(xb)
    with pytest.raises(UserError, match="needs training data"):
        FaissIndex("IVF64,Flat").train(None)
    with pytest.raises(UserError, match=r"training 'IVF64,Flat' on 10 vectors failed: Number of training points"):
        FaissIndex("IVF64,Flat").train(xt[:10])
    with pytest.raises(UserError, match="does not fit d=30"):
        FaissIndex("PQ8").train(xt[:, :30])  # 30 is not a multiple of 8


def test_empty_index_and_search_mode_defaults(data):
    _, _, xq = data
    assert SearchMode.parse(None) == SearchMode("k", 100)
    assert SearchMode.parse({"global_top_k": "auto"}) == SearchMode("global_top_k", 0, 10)
    got = FaissIndex(search={"k": 4}).search(xq)
    assert isinstance(got, Neighbors) and np.all(got.indices == -1)
    assert len(FaissIndex(search={"global_top_k": 5}).search(xq).q) == 0
