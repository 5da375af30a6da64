"""SIMAT score, oracle recall, composed Recall@K, the exact search and the composers, against the slow
implementations of simat_reference.py (exact inputs: dyadic unit vectors, so ties are real ties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import UserError
from harness_plugins.simat.composer import SimatArithmetic, SumComposer, l2_normalize
from harness_plugins.simat.metrics import (ComposedRecall, SimatOracleRecall, SimatScore, max_over_grid,
                                           simat_outcomes)
from harness_plugins.simat.search import composed_search, search_ip
from harness_plugins.simat.types import (ComposedGroundTruth, ComposedQueries, ComposedRetrieval,
                                         SimatGroundTruth)
from simat_reference import slow_rankings, slow_recall, slow_simat_score

D = 8


@st.composite
def unit_vectors(draw, n):
    """n exactly-unit vectors in d=8 (one-hot +-1, or +-0.5 on four coordinates), times a power of 2."""
    out = []
    for _ in range(n):
        v = np.zeros(D)
        if draw(st.booleans()):
            v[draw(st.integers(0, D - 1))] = draw(st.sampled_from([-1.0, 1.0]))
        else:
            idx = draw(st.permutations(range(D)))[:4]
            v[list(idx)] = [draw(st.sampled_from([-0.5, 0.5])) for _ in range(4)]
        out.append(v * draw(st.sampled_from([1.0, 2.0, 0.5])))
    return np.array(out, dtype=np.float32).reshape(n, D)


@st.composite
def simat_cases(draw):
    nb = draw(st.integers(2, 9))
    nw = draw(st.integers(2, 5))
    ncap = draw(st.integers(1, 4))
    images = draw(unit_vectors(nb))
    word_vecs = draw(unit_vectors(nw))
    words = [f"w{i}" for i in range(nw)]
    nq = draw(st.integers(0, 12))
    queries = []
    for i in range(nq):
        v, t = draw(st.lists(st.integers(0, nw - 1), min_size=2, max_size=2, unique=True))
        queries.append({"id": f"q{i}", "source": draw(st.integers(0, nb - 1)), "texts": (words[v], words[t]),
                        "caption": draw(st.integers(0, ncap - 1)), "norm2": draw(st.sampled_from([1, 2, 3, 7, 220]))})
    oracle = np.array([[draw(st.sampled_from([0.1, 0.5, 0.5000001, 0.9])) for _ in range(ncap)] for _ in range(nb)],
                      dtype=np.float32)
    lam = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0]))
    return images, dict(zip(words, word_vecs)), queries, oracle, lam


def _inputs(images, words, queries, oracle=None, m=2):
    texts = tuple(sorted(words))
    index = {w: i for i, w in enumerate(texts)}
    nq = len(queries)
    cq = ComposedQueries(
        ids=np.array([q["id"] for q in queries], dtype=str),
        source=np.array([q["source"] for q in queries], dtype=np.int64),
        texts=texts,
        text_index=np.array([[index[w] for w in q["texts"]] for q in queries], dtype=np.int64).reshape(nq, m),
        text_roles=("value", "target") if m == 2 else ("modification",),
    )
    t = np.stack([words[w] for w in texts])
    gt = None
    if oracle is not None:
        gt = SimatGroundTruth(cq.ids, cq.source, np.array([q["caption"] for q in queries], dtype=np.int64),
                              np.array([q["norm2"] for q in queries], dtype=np.float64), oracle)
    return cq, t, gt


def _retrieve(images, t, cq, lam, k=10, heads=None):
    db_ids = np.array([str(i) for i in range(len(images))])
    return composed_search(SimatArithmetic(lambda_=lam, heads=heads), images, t, cq, db_ids, k=k)


@settings(max_examples=150, deadline=None)
@given(simat_cases())
def test_simat_score_equals_slow_implementation(case):
    images, words, queries, oracle, lam = case
    cq, t, gt = _inputs(images, words, queries, oracle)
    r = _retrieve(images, t, cq, lam)
    got = SimatScore()(gt, r)["score"]
    want = slow_simat_score(images, words, queries, oracle, lam)
    assert (got is None) == (want is None)
    if want is not None:
        assert abs(got - want) < 1e-9
        recall = SimatOracleRecall(k=3)(gt, r)["recall@3"]
        assert abs(recall - slow_simat_score(images, words, queries, oracle, lam, k=3)) < 1e-9
    # composing the query vectors and searching them gives the same rows as the linear path
    comp = SimatArithmetic(lambda_=lam)
    i_, t_ = comp.prepare_images(images), comp.prepare_texts(t)
    direct, _ = search_ip(comp.compose(i_, t_, cq), i_, 10, exclude=cq.source)
    assert np.array_equal(direct, r.indices)
    # the full ranking (source removed) matches too, ties by lower row
    want_ranks = slow_rankings(images, words, queries, lam)
    full = r.ranking(min(10, len(images) - 1))
    for row, w in zip(full, want_ranks):
        assert row.tolist() == w[: full.shape[1]]


def test_top2_rule_threshold_and_weights_by_hand():
    # three images: source 0, its near copy 1, and 2; the source is the top-1 of its own query
    images = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
    words = {"a": np.array([0, 0, 1, 0], np.float32), "b": np.array([0, 0, 0, 1], np.float32)}
    queries = [{"id": "x", "source": 0, "texts": ("a", "b"), "caption": 0, "norm2": 4},
               {"id": "y", "source": 2, "texts": ("a", "b"), "caption": 1, "norm2": 1}]
    oracle = np.array([[0.9, 0.9], [0.5, 0.2], [0.9, 0.9]], dtype=np.float32)
    cq, t, gt = _inputs(images, words, queries, oracle)
    r = _retrieve(images, t, cq, 1.0)
    table = SimatScore().table(gt, r)
    # x: top-1 is the source 0 (tied with 1, lower row first), so the top-2 (row 1) counts; 0.5 is not > 0.5
    assert table["retrieved_id"].tolist() == ["1", "0"]
    assert table["oracle"].tolist() == [0.5, float(np.float32(0.9))]
    assert table["success"].tolist() == [False, True]
    # weights norm2^-1/2 = 1/2 and 1, normalised over the split: 1/3 and 2/3
    assert np.allclose(table["weight"], [1 / 3, 2 / 3])
    assert SimatScore()(gt, r)["score"] == pytest.approx(100 * 2 / 3, abs=1e-12)


def test_empty_split():
    images = np.eye(3, dtype=np.float32)
    cq, t, gt = _inputs(images, {"a": np.eye(3, dtype=np.float32)[0], "b": np.eye(3, dtype=np.float32)[1]}, [],
                        np.ones((3, 1), np.float32))
    r = _retrieve(images, t, cq, 1.0)
    assert SimatScore()(gt, r) == {"score": None, "unweighted_accuracy": None, "queries": 0}
    assert ComposedRecall()(ComposedGroundTruth(cq.ids, np.zeros(1, np.int64), np.zeros(0, np.int64)), r)["recall@1"] is None


def test_misaligned_retrieval_is_refused():
    images = np.eye(3, dtype=np.float32)
    words = {"a": np.eye(3, dtype=np.float32)[0], "b": np.eye(3, dtype=np.float32)[1]}
    q = [{"id": "x", "source": 0, "texts": ("a", "b"), "caption": 0, "norm2": 1}]
    cq, t, gt = _inputs(images, words, q, np.ones((3, 1), np.float32))
    r = _retrieve(images, t, cq, 1.0)
    other = ComposedRetrieval(r.query_ids, r.db_ids, r.indices, r.scores, np.array([1]))
    with pytest.raises(UserError, match="source row"):
        SimatScore()(gt, other)
    with pytest.raises(UserError, match="the OSCAR matrix has 2 rows"):
        SimatScore()(SimatGroundTruth(gt.query_ids, gt.source, gt.target_caption, gt.norm2, gt.oracle[:2]), r)
    with pytest.raises(UserError, match="not the ground truth"):
        SimatScore()(SimatGroundTruth(np.array(["z"]), gt.source, gt.target_caption, gt.norm2, gt.oracle), r)


@st.composite
def recall_cases(draw):
    nb = draw(st.integers(2, 12))
    images = draw(unit_vectors(nb))
    mods = [f"m{i}" for i in range(draw(st.integers(1, 4)))]
    words = dict(zip(mods, draw(unit_vectors(len(mods)))))
    queries, targets = [], []
    for i in range(draw(st.integers(0, 10))):
        src = draw(st.integers(0, nb - 1))
        others = [j for j in range(nb) if j != src]
        tg = draw(st.lists(st.sampled_from(others), min_size=1, max_size=3, unique=True))
        queries.append({"id": f"q{i}", "source": src, "texts": (draw(st.sampled_from(mods)),)})
        targets.append(tg)
    return images, words, queries, targets, draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))


@settings(max_examples=150, deadline=None)
@given(recall_cases())
def test_composed_recall_equals_slow_implementation(case):
    images, words, queries, targets, lam = case
    cq, t, _ = _inputs(images, words, queries, m=1)
    ptr = np.concatenate([[0], np.cumsum([len(x) for x in targets])]).astype(np.int64)
    gt = ComposedGroundTruth(cq.ids, ptr, np.array([j for x in targets for j in x], dtype=np.int64))
    ks = (1, 2, 5, 50)
    r = composed_search(SumComposer(lambda_=lam), images, t, cq, np.array([str(i) for i in range(len(images))]), k=50)
    got = ComposedRecall(ks)(gt, r)
    comp = SumComposer(lambda_=lam)
    i_, t_ = comp.prepare_images(images), comp.prepare_texts(t)
    assert np.array_equal(search_ip(comp.compose(i_, t_, cq), i_, 50, exclude=cq.source)[0], r.indices)
    want = slow_recall(images, words, queries, targets, lam, ks)
    for k in ks:
        assert (got[f"recall@{k}"] is None) == (want[k] is None)
        if want[k] is not None:
            assert abs(got[f"recall@{k}"] - want[k]) < 1e-9


def test_ranking_removes_source_and_detects_truncation():
    r = ComposedRetrieval(np.array(["a", "b"]), np.array(["0", "1", "2", "3"]),
                          np.array([[2, 1], [0, 3]]), np.array([[0.9, 0.5], [0.8, 0.1]], np.float32),
                          np.array([2, -1]))
    with pytest.raises(ValueError, match="k >= 3"):
        r.ranking(2)  # query a lost its source from a top-2: its second result is unknown
    assert r.ranking(1).tolist() == [[1], [0]]
    padded = ComposedRetrieval(np.array(["a"]), np.array(["0", "1"]), np.array([[0, -1]]),
                               np.array([[0.5, -np.inf]], np.float32), np.array([0]))
    assert padded.ranking(3).tolist() == [[-1, -1, -1]]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.integers(1, 35), st.integers(0, 2**31 - 1))
def test_search_ip_matches_full_sort_with_ties(nq, nb, k, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(nq, 4)).astype(np.float32)  # small integers: many exact ties
    db = rng.integers(-2, 3, size=(nb, 4)).astype(np.float32)
    exclude = rng.integers(-1, nb, size=nq)
    idx, sc = search_ip(q, db, k, exclude=exclude, block=7)
    for i in range(nq):
        s = [float(np.dot(q[i].astype(np.float64), db[j])) for j in range(nb)]
        order = [j for j in sorted(range(nb), key=lambda j: (-s[j], j)) if j != exclude[i]][:k]
        assert idx[i, : len(order)].tolist() == order
        assert (idx[i, len(order):] == -1).all() and np.isneginf(sc[i, len(order):]).all()
        assert sc[i, : len(order)].tolist() == [s[j] for j in order]


def test_arithmetic_with_heads_matches_slow(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    heads = {f"{s}.{p}": rng.standard_normal((D, D) if p == "weight" else (D,)).astype(np.float32)
             for s in ("img_head", "txt_head") for p in ("weight", "bias")}
    path = tmp_path / "heads.safetensors"
    save_file(heads, str(path))
    images = rng.standard_normal((6, D)).astype(np.float32)
    words = {w: rng.standard_normal(D).astype(np.float32) for w in ("a", "b", "c")}
    queries = [{"id": "x", "source": 1, "texts": ("a", "c")}, {"id": "y", "source": 4, "texts": ("b", "a")}]
    cq, t, _ = _inputs(images, words, queries)
    comp = SimatArithmetic(lambda_=0.7, heads=str(path))
    q = comp.compose(comp.prepare_images(images), comp.prepare_texts(t), cq)
    # slow: heads on the raw embeddings, then normalise, then the arithmetic (eval.py's order)
    def lin(side, x):
        return heads[f"{side}.weight"].astype(np.float64) @ x + heads[f"{side}.bias"]
    def nrm(v):
        return v / np.linalg.norm(v)
    for row, qq in zip(q, queries):
        i = nrm(lin("img_head", images[qq["source"]].astype(np.float64)))
        v, tt = (nrm(lin("txt_head", words[w].astype(np.float64))) for w in qq["texts"])
        assert np.allclose(row, i + 0.7 * (tt - v), atol=1e-5)
    assert comp.fingerprint().startswith("heads:")
    assert SimatArithmetic().fingerprint() == "no-heads"


def test_composer_input_errors(tmp_path):
    with pytest.raises(UserError, match="all zeros"):
        l2_normalize(np.zeros((2, 3)), "image embeddings")
    with pytest.raises(UserError, match="NaN"):
        l2_normalize(np.array([[1.0, np.nan]]), "text embeddings")
    with pytest.raises(UserError, match="finite"):
        SimatArithmetic(lambda_=float("inf"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="not a readable safetensors"):
        SimatArithmetic(heads=str(bad)).prepare_images(np.eye(2, dtype=np.float32))
    from safetensors.numpy import save_file

    save_file({"img_head.weight": np.eye(3, dtype=np.float32)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(UserError, match="txt_head.weight"):
        SimatArithmetic(heads=str(tmp_path / "half.safetensors")).heads
    images, cq_words = np.eye(4, dtype=np.float32), {"a": np.eye(3, dtype=np.float32)[0], "b": np.eye(3, dtype=np.float32)[1]}
    cq, t, _ = _inputs(images, cq_words, [{"id": "x", "source": 0, "texts": ("a", "b")}])
    with pytest.raises(UserError, match="same dimension"):
        SimatArithmetic().compose(images, t, cq)
    with pytest.raises(UserError, match=r"needs texts \(modification\)"):
        SumComposer().compose(images, t, cq)


def test_max_over_grid():
    assert max_over_grid({0.0: 10.0, 1.0: 47.5, 2.0: 47.5, 3.0: None}) == {"max_score": 47.5, "best_lambda": 1.0}
    assert max_over_grid({1.0: None}) == {"max_score": None, "best_lambda": None}


def test_outcomes_with_oracle_recall_uses_first_k_after_source():
    images = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1]], dtype=np.float32)
    words = {"a": np.array([1, 0], np.float32), "b": np.array([0, 1], np.float32)}
    q = [{"id": "x", "source": 0, "texts": ("a", "b"), "caption": 0, "norm2": 1}]
    cq, t, gt = _inputs(images, words, q, np.array([[0.9], [0.1], [0.1], [0.9]], np.float32))
    r = _retrieve(images, t, cq, 0.0)  # lambda 0: ranking 1, 2, 3 after the source
    out = simat_outcomes(gt, r, k=3)
    assert out["top"].tolist() == [[1, 2, 3]]
    assert SimatScore()(gt, r)["score"] == 0.0
    assert SimatOracleRecall(k=2)(gt, r)["recall@2"] == 0.0
    assert SimatOracleRecall(k=3)(gt, r)["recall@3"] == 100.0


def test_search_linear_paths_agree(monkeypatch):
    import harness_plugins.simat.search as search

    rng = np.random.default_rng(1)
    images = rng.integers(-2, 3, size=(30, 6)).astype(np.float32)
    texts = rng.integers(-2, 3, size=(5, 6)).astype(np.float32)
    cq = ComposedQueries(np.array([f"q{i}" for i in range(40)]), rng.integers(0, 30, 40), tuple("abcde"),
                         rng.integers(0, 5, size=(40, 2)), ("value", "target"))
    coef = np.array([-0.5, 0.5], np.float32)
    with_gram = search.search_linear(images, texts, cq, coef, 7, block=9)
    given = search.search_linear(images, texts, cq, coef, 7, gram_matrix=search.gram(images),
                                 text_products=texts @ images.T)
    few = ComposedQueries(cq.ids[:8], cq.source[:8] % 5, cq.texts, cq.text_index[:8], cq.text_roles)
    rows_only = search.search_linear(images, texts, few, coef, 7)  # 5 sources of 30: Gram rows only
    full = search.search_linear(images, texts, few, coef, 7, gram_matrix=search.gram(images))
    assert np.array_equal(rows_only[0], full[0]) and np.array_equal(rows_only[1], full[1])
    monkeypatch.setattr(search, "GRAM_MAX_ENTRIES", 10)
    direct = search.search_linear(images, texts, cq, coef, 7)
    for other in (given, direct):
        assert np.array_equal(with_gram[0], other[0]) and np.array_equal(with_gram[1], other[1])
    with pytest.raises(ValueError, match="coefficients"):
        search.search_linear(images, texts, cq, np.ones(3), 7)
