"""Revisitop metrics: the test vectors of protocols.md §2 and a slow per-query reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.parts import Neighbors, Retrieval
from harness_plugins.revisitop.groundtruth import QueryGnd, RevisitopGroundTruth
from harness_plugins.revisitop.metrics import RevisitopMetrics, compute_revisitop


def make_gnd(easy, hard=None, junk=None, n_db=5):
    nq = len(easy)
    hard = hard or [[] for _ in range(nq)]
    junk = junk or [[] for _ in range(nq)]
    arr = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return RevisitopGroundTruth(
        "test",
        tuple(f"db{i}" for i in range(n_db)),
        tuple(f"q{i}" for i in range(nq)),
        tuple(QueryGnd(arr(e), arr(h), arr(j), (0.0, 0.0, 1.0, 1.0)) for e, h, j in zip(easy, hard, junk)),
    )


# ---------------------------------------------------------------------------------- test vectors


def test_t1():
    ranks = np.array([[4, 2, 0, 1, 3], [0, 2, 4, 1, 3], [0, 1, 2, 3, 4]]).T
    gnd = make_gnd([[0, 1], [0, 4], []], junk=[[2], [], []])
    res = compute_revisitop(ranks, gnd, ks=(1, 2, 5))["easy"]
    assert res["map"] == pytest.approx(0.6041667, abs=1e-7)
    assert res["aps"][0] == pytest.approx(0.416667, abs=1e-6)
    assert res["aps"][1] == pytest.approx(0.791667, abs=1e-6)
    assert res["aps"][2] is None
    assert [res["mp@1"], res["mp@2"], res["mp@5"]] == pytest.approx([0.5, 0.5, 0.666667], abs=1e-6)


def test_t2_t3():
    t2 = compute_revisitop(np.arange(10)[:, None], make_gnd([[0, 2, 5]], n_db=10))["easy"]["map"]
    assert t2 == pytest.approx(0.6777778, abs=1e-7)
    t3 = compute_revisitop(np.array([[0], [1], [2], [3]]), make_gnd([[0, 2, 8, 9]], n_db=10))["easy"]["map"]
    assert t3 == pytest.approx(0.3958333, abs=1e-7)  # positives 8, 9 not retrieved (truncated ranking)


def test_t4():
    res = compute_revisitop(np.arange(20)[:, None], make_gnd([[0, 1, 2]], n_db=20))["easy"]
    assert res["map"] == 1.0 and (res["mp@1"], res["mp@5"], res["mp@10"]) == (1.0, 1.0, 1.0)
    assert (res["mr@1"], res["mr@5"]) == (pytest.approx(1 / 3), 1.0)


def test_protocols_route_easy_hard_junk():
    # db 0 easy, 1 hard, 2 junk; ranking [2, 1, 0, 3]
    gnd = make_gnd([[0]], hard=[[1]], junk=[[2]])
    res = compute_revisitop(np.array([[2], [1], [0], [3]]), gnd)
    assert res["easy"]["map"] == 1.0  # junk and hard removed: 0 first
    assert res["hard"]["map"] == 1.0  # junk removed: 1 first; easy ignored
    assert res["medium"]["map"] == 1.0  # junk removed: 1, 0 at positions 0, 1


def test_unretrieved_positives_give_zero_and_distractors_are_negatives():
    gnd = make_gnd([[0], [1]], n_db=5)
    ranks = np.array([[100, 2], [101, 1]])  # q0 gets only distractors, q1 finds 1 at position 1
    res = compute_revisitop(ranks, gnd)["easy"]
    assert res["aps"][0] == 0.0 and res["mp@1"] == 0.0
    assert res["aps"][1] == pytest.approx((0.0 + 0.5) / 2)


def test_no_positive_anywhere_gives_none():
    res = compute_revisitop(np.array([[0]]), make_gnd([[]], hard=[[1]]))
    assert res["easy"]["map"] is None and res["hard"]["map"] == 0.0


def test_rejects_wrong_shape_and_duplicates():
    gnd = make_gnd([[0], [1]])
    with pytest.raises(ValueError, match="shape"):
        compute_revisitop(np.zeros((2, 3), dtype=np.int64), gnd)
    with pytest.raises(ValueError, match="appears twice in ranking column 1"):
        compute_revisitop(np.array([[3, 1], [2, 1]]), gnd)


# ------------------------------------------------------------------------------ slow reference


def slow_query(ranking, pos, ign, ks):
    """protocols.md §2 for one query, with explicit loops."""
    kept = [int(x) for x in ranking if int(x) not in ign]
    r = [i for i, x in enumerate(kept) if x in pos]
    n = len(pos)
    ap = sum(((j / rj if rj > 0 else 1.0) + (j + 1) / (rj + 1)) / 2 for j, rj in enumerate(r)) / n
    prec, rec = [], []
    for k in ks:
        if r:
            kq = min(k, r[-1] + 1)
            prec.append(sum(1 for x in r if x + 1 <= kq) / kq)
        else:
            prec.append(0.0)
        rec.append(sum(1 for x in r if x < k) / n)
    return ap, prec, rec


def slow_revisitop(ranks, easy, hard, junk, ks):
    out = {}
    for name, pos_of, ign_of in (
        ("easy", lambda q: set(easy[q]), lambda q: set(junk[q]) | set(hard[q])),
        ("medium", lambda q: set(easy[q]) | set(hard[q]), lambda q: set(junk[q])),
        ("hard", lambda q: set(hard[q]), lambda q: set(junk[q]) | set(easy[q])),
    ):
        aps, precs, recs = [], [], []
        for q in range(ranks.shape[1]):
            pos = pos_of(q)
            if not pos:
                aps.append(None)
                continue
            ap, p, r = slow_query(ranks[:, q], pos, ign_of(q) - pos, ks)
            aps.append(ap)
            precs.append(p)
            recs.append(r)
        res = {"map": float(np.mean([a for a in aps if a is not None])) if precs else None, "aps": aps}
        for i, k in enumerate(ks):
            res[f"mp@{k}"] = float(np.mean([p[i] for p in precs])) if precs else None
            res[f"mr@{k}"] = float(np.mean([r[i] for r in recs])) if precs else None
        out[name] = res
    return out


def assert_close(fast, slow):
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name].keys() == slow[name].keys()
        for key, value in slow[name].items():
            got = fast[name][key]
            if key == "aps":
                assert [a is None for a in got] == [a is None for a in value]
                assert [a for a in got if a is not None] == pytest.approx([a for a in value if a is not None], abs=1e-9)
            elif value is None:
                assert got is None
            else:
                assert got == pytest.approx(value, abs=1e-9), (name, key)


@st.composite
def revisitop_problems(draw):
    n_db = draw(st.integers(1, 12))
    nq = draw(st.integers(1, 4))
    ids = st.lists(st.integers(0, n_db - 1), unique=True, max_size=n_db)
    easy = [draw(ids) for _ in range(nq)]
    hard = [draw(ids) for _ in range(nq)]  # may overlap easy/junk: positive wins
    junk = [draw(ids) for _ in range(nq)]
    depth = draw(st.integers(0, n_db + 3))
    cols = []
    for _ in range(nq):  # a permutation of db ids and distractors, truncated
        universe = list(range(n_db + 3))
        cols.append(draw(st.permutations(universe))[:depth])
    ranks = np.array(cols, dtype=np.int64).T.reshape(depth, nq)
    return ranks, easy, hard, junk, n_db


@settings(max_examples=300, deadline=None)
@given(revisitop_problems(), st.sampled_from([(1, 5, 10), (1, 2, 3)]))
def test_fast_equals_slow(problem, ks):
    ranks, easy, hard, junk, n_db = problem
    gnd = make_gnd(easy, hard, junk, n_db=n_db)
    assert_close(compute_revisitop(ranks, gnd, ks), slow_revisitop(ranks, easy, hard, junk, ks))


# ---------------------------------------------------------------------------------------- plugin


def test_metric_plugin_with_padded_pairs_form():
    gnd = make_gnd([[0], [2]], n_db=4)
    # q0: pairs (0, db1, 0.9), (0, db0, 0.5); q1: (1, db2, 0.3) -> column 1 padded with -1
    nb = Neighbors.pairs(np.array([0, 0, 1]), np.array([1, 0, 2]), np.array([0.9, 0.5, 0.3]))
    retrieval = Retrieval(np.array(["q0", "q1"]), np.array(["db0", "db1", "db2", "db3"]), nb)
    metric = RevisitopMetrics(protocols=["easy"], ks=[1])
    assert metric.protocol == "revisitop" and metric.version == "1"
    out = metric(gnd, retrieval)
    assert set(out) == {"easy.map", "easy.mp@1", "easy.mr@1"}
    assert out["easy.map"] == pytest.approx(((0 + 0.5) / 2 + 1.0) / 2)
    with pytest.raises(ValueError):
        RevisitopMetrics(protocols=["extreme"])


def test_large_ranking_is_fast_enough():
    import time

    rng = np.random.default_rng(0)
    n_db, nq, depth = 5000, 70, 200_000
    gnd = make_gnd([rng.choice(n_db, 50, replace=False).tolist() for _ in range(nq)],
                   junk=[rng.choice(n_db, 20, replace=False).tolist() for _ in range(nq)], n_db=n_db)
    ranks = np.stack([rng.permutation(depth + n_db)[:depth] for _ in range(nq)], axis=1)
    t = time.perf_counter()
    compute_revisitop(ranks, gnd)
    assert time.perf_counter() - t < 5.0  # the benchmark measures the real size; this only guards blunders
