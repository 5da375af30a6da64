"""DISC21 metrics against protocols.md §1 and a deliberately simple slow implementation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.parts import Neighbors, Retrieval
from harness_plugins.disc21.groundtruth import Disc21GroundTruth
from harness_plugins.disc21.metrics import Disc21Metrics, encode_ids, score_predictions

KEYS = {
    "micro_ap", "recall_at_p90", "threshold_at_p90", "recall_at_rank1", "recall_at_rank10",
    "n_predictions", "n_gt_pairs", "scorer",
}


def slow_score(preds, gt_rows, scorer):
    """The definitions of protocols.md §1, written out with Python loops and sets."""
    listed = {q for q, _ in gt_rows}
    pairs = {(q, r) for q, r in gt_rows if r}
    n = len(pairs)
    if scorer == "official":
        preds = [p for p in preds if p[0] in listed]
    labelled = sorted(((s, (q, r) in pairs) for q, r, s in preds), key=lambda t: (-t[0], t[1]))
    tp, ap, best, thr = 0, 0.0, None, None
    for i, (s, y) in enumerate(labelled, start=1):
        tp += y
        if y:
            ap += tp / i
        if n and tp / i >= 0.9 and (best is None or tp / n > best):
            best, thr = tp / n, s
    rank1 = rank10 = 0
    for q, r in pairs:
        mine = [s for qq, rr, s in preds if (qq, rr) == (q, r)]
        if mine:
            rank = sum(1 for qq, _, s in preds if qq == q and s >= mine[0]) - 1
            rank1 += rank == 0
            rank10 += rank < 10
    if best is None and scorer == "official":
        best = 0.0
    return {
        "micro_ap": ap / n if n else 0.0,
        "recall_at_p90": best,
        "threshold_at_p90": thr,
        "recall_at_rank1": rank1 / n if n else 0.0,
        "recall_at_rank10": rank10 / n if n else 0.0,
        "n_predictions": len(preds),
        "n_gt_pairs": n,
        "scorer": scorer,
    }


def fast_score(preds, gt_rows, scorer):
    gt = Disc21GroundTruth.from_arrays(np.array([q for q, _ in gt_rows], dtype=str), np.array([r for _, r in gt_rows], dtype=str))
    q = np.array([p[0] for p in preds], dtype=str)
    r = np.array([p[1] for p in preds], dtype=str)
    s = np.array([p[2] for p in preds], dtype=np.float64)
    return score_predictions(q, r, s, gt, scorer=scorer)


def assert_same(a, b):
    assert set(a) == KEYS and set(b) == KEYS
    for k in KEYS:
        if isinstance(b[k], float):
            assert a[k] == pytest.approx(b[k], abs=1e-9), k
        else:
            assert a[k] == b[k], k


GT3 = [("Q1", "R1"), ("Q2", "R2"), ("Q3", "R3"), ("Q4", "")]


# ------------------------------------------------------------------------------------ toy checks


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_toy_check_any_order(order):
    rows = [("Q1", "R1", 0.5), ("Q4", "R1", 0.5), ("Q2", "R2", 0.4)]
    res = fast_score([rows[i] for i in order], GT3, "official")
    assert res["micro_ap"] == pytest.approx((1 / 2 + 2 / 3) / 3, abs=1e-9)
    assert res["recall_at_p90"] == 0.0 and res["threshold_at_p90"] is None


def test_all_tied_three_tp_one_fp():
    rows = [("Q1", "R1", 1.0), ("Q2", "R2", 1.0), ("Q3", "R3", 1.0), ("Q4", "R9", 1.0)]
    res = fast_score(rows, GT3, "isc2021")
    assert res["micro_ap"] == pytest.approx(0.638889, abs=1e-6)
    assert res["recall_at_p90"] is None  # precision 3/4 at best
    assert res["recall_at_rank1"] == 1.0


def test_perfect_and_threshold():
    rows = [("Q1", "R1", 3.0), ("Q2", "R2", 2.0), ("Q3", "R3", 1.0), ("Q1", "R5", 0.5)]
    res = fast_score(rows, GT3, "official")
    assert res["micro_ap"] == 1.0
    assert res["recall_at_p90"] == 1.0 and res["threshold_at_p90"] == 1.0
    assert res["n_predictions"] == 4 and res["n_gt_pairs"] == 3


def test_official_drops_unlisted_queries_isc2021_keeps_them():
    rows = [("Q9", "R1", 0.9), ("Q1", "R1", 0.5)]
    official = fast_score(rows, GT3, "official")
    library = fast_score(rows, GT3, "isc2021")
    assert official["n_predictions"] == 1 and official["micro_ap"] == pytest.approx(1 / 3)
    assert library["n_predictions"] == 2 and library["micro_ap"] == pytest.approx(0.5 / 3)


def test_rank_recall_is_pessimistic_on_ties():
    rows = [("Q1", "R7", 0.5), ("Q1", "R1", 0.5)] + [("Q2", f"R{i}0", 0.9) for i in range(10)] + [("Q2", "R2", 0.1)]
    res = fast_score(rows, GT3, "official")
    assert res["recall_at_rank1"] == 0.0  # Q1's pair ties with a wrong reference: rank 1
    assert res["recall_at_rank10"] == pytest.approx(1 / 3)  # Q2's pair has rank 10


def test_empty_predictions():
    res = fast_score([], GT3, "isc2021")
    assert res["micro_ap"] == 0.0 and res["recall_at_p90"] is None and res["recall_at_rank1"] == 0.0
    assert fast_score([], GT3, "official")["recall_at_p90"] == 0.0


def test_no_gt_pairs():
    res = fast_score([("Q4", "R1", 1.0)], [("Q4", "")], "official")
    assert res["micro_ap"] == 0.0 and res["n_gt_pairs"] == 0


def test_rejects_duplicates_nan_and_lengths():
    with pytest.raises(ValueError, match="duplicate prediction \\(Q1, R1\\) at rows 0 and 2"):
        fast_score([("Q1", "R1", 0.5), ("Q2", "R1", 0.5), ("Q1", "R1", 0.1)], GT3, "official")
    with pytest.raises(ValueError, match="not finite"):
        fast_score([("Q1", "R1", float("nan"))], GT3, "official")
    gt = Disc21GroundTruth.from_arrays(np.array(["Q1"]), np.array(["R1"]))
    with pytest.raises(ValueError, match="differ in length"):
        score_predictions(np.array(["Q1"]), np.array([], dtype=str), np.array([1.0]), gt)
    with pytest.raises(ValueError, match="unknown scorer"):
        score_predictions(np.array(["Q1"]), np.array(["R1"]), np.array([1.0]), gt, scorer="leaderboard")


# ------------------------------------------------------------------------------------- id codes


@given(st.lists(st.lists(st.sampled_from(["Q1", "Q01", "Q10", "A1", "Q0000001", "7", "Q99999999", "é1", "Q", "Q1 "]), max_size=6), min_size=1, max_size=3))
def test_encode_ids_is_injective_and_consistent(arrays):
    arrays = [np.array(a, dtype=str) for a in arrays]
    codes, size = encode_ids(*arrays)
    flat_s = [s for a in arrays for s in a.tolist()]
    flat_c = [int(c) for cs in codes for c in cs]
    assert all(0 <= c < size for c in flat_c)
    for (s1, c1), (s2, c2) in itertools.combinations(zip(flat_s, flat_c), 2):
        assert (s1 == s2) == (c1 == c2)


def test_encode_ids_fast_path_uses_digits():
    (a, b), size = encode_ids(np.array(["Q00012", "Q00003"]), np.array(["Q00003"]))
    assert a.tolist() == [12, 3] and b.tolist() == [3] and size == 13


# ------------------------------------------------------------------------------ property tests


@st.composite
def problems(draw):
    fixed = draw(st.booleans())  # fixed-width ids take the digit fast path, others the fallback
    qname = (lambda i: f"Q{i:03d}") if fixed else (lambda i: f"Q{i}")
    rname = (lambda i: f"R{i:03d}") if fixed else (lambda i: f"ref{i}")
    n_listed = draw(st.integers(0, 8))
    gt_rows = []
    for i in range(n_listed):
        ref = draw(st.one_of(st.just(""), st.integers(0, 6).map(rname)))
        gt_rows.append((qname(i), ref))
    pool = [(qname(i), rname(j)) for i in range(12) for j in range(7)]  # queries 8..11 never listed
    chosen = draw(st.lists(st.sampled_from(pool), unique=True, max_size=40))
    values = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]), min_size=len(chosen), max_size=len(chosen)))
    return [(q, r, s) for (q, r), s in zip(chosen, values)], gt_rows


@settings(max_examples=300, deadline=None)
@given(problems(), st.sampled_from(["official", "isc2021"]))
def test_fast_equals_slow(problem, scorer):
    preds, gt_rows = problem
    assert_same(fast_score(preds, gt_rows, scorer), slow_score(preds, gt_rows, scorer))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_fast_equals_slow_on_larger_random_inputs(seed):
    rng = np.random.default_rng(seed)
    gt_rows = [(f"Q{i:05d}", f"R{rng.integers(0, 50):06d}" if rng.random() < 0.6 else "") for i in range(30)]
    pairs = {(f"Q{rng.integers(0, 40):05d}", f"R{rng.integers(0, 50):06d}") for _ in range(400)}
    preds = [(q, r, float(rng.integers(0, 5))) for q, r in sorted(pairs)]
    for row in gt_rows[:10]:  # make sure there are true positives
        if row[1] and (row[0], row[1]) not in pairs:
            preds.append((row[0], row[1], float(rng.integers(0, 5))))
    for scorer in ("official", "isc2021"):
        assert_same(fast_score(preds, gt_rows, scorer), slow_score(preds, gt_rows, scorer))


# ---------------------------------------------------------------------------------------- plugin


def test_metric_plugin_on_retrieval():
    gt = Disc21GroundTruth.from_arrays(np.array(["Q1", "Q2", "Q3"]), np.array(["R1", "R2", ""]))
    retrieval = Retrieval(
        np.array(["Q1", "Q2", "Q3"]),
        np.array(["R1", "R2", "R3"]),
        Neighbors.knn(np.array([[0, 2], [1, -1], [2, -1]]), np.array([[0.9, 0.1], [0.8, 0.0], [0.7, 0.0]])),
    )
    metric = Disc21Metrics("isc2021")
    assert metric.protocol == "disc21-isc2021" and metric.version == "2"
    out = metric(gt, retrieval)
    assert "scorer" not in out
    assert out["micro_ap"] == pytest.approx((1 + 1) / 2)
    assert out["n_predictions"] == 4  # padding dropped
    assert Disc21Metrics().protocol == "disc21-official"
    with pytest.raises(ValueError):
        Disc21Metrics("bogus")  # type: ignore[arg-type]


# ------------------------------------------------------------------- linear-time counting helpers

from harness_plugins.disc21.metrics import _count_above_equal, _digit_codes, _smallest_duplicate  # noqa: E402

SPECIAL = [0.0, -0.0, 5e-324, -5e-324, 1e-300, 1.0, 1.0 + 2**-52, 1 - 2**-53, -1.0, 1e308, -1e308]
SPECIAL += [1.7976931348623157e308, -1.7976931348623157e308]  # largest finite: x - lo must not overflow
FLOATS = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=False, allow_infinity=False), st.integers(-3, 3).map(float))


def slow_above_equal(values, x):
    return [sum(1 for v in x if v > u) for u in values], [sum(1 for v in x if v == u) for u in values]


@settings(max_examples=300, deadline=None)
@given(st.lists(FLOATS, max_size=40), st.lists(FLOATS, min_size=1, max_size=12))
def test_count_above_equal_matches_definition(x, values):
    u = np.unique(np.array(values))  # ascending, distinct (-0.0 == 0.0)
    above, equal = _count_above_equal(u, np.array(x, dtype=np.float64))
    assert (above.tolist(), equal.tolist()) == slow_above_equal(u.tolist(), x)


@pytest.mark.parametrize("case", ["spread", "crowded", "ties", "outlier", "subnormal"])
def test_count_above_equal_on_larger_inputs(case):
    rng = np.random.default_rng(7)
    x = {
        "spread": rng.normal(size=20_000),
        "crowded": 1 + rng.integers(0, 50, 20_000) * 2**-52,  # many values per bucket
        "ties": np.round(rng.random(20_000), 2),
        "outlier": np.r_[rng.random(20_000) * 1e-9, 1e300, -1e300],  # all but two in a bucket or two
        "subnormal": rng.integers(0, 4, 20_000) * 5e-324,  # spread too small to bucket
    }[case]
    u = np.unique(rng.choice(x, 300))
    above, equal = _count_above_equal(u, x)
    srt = np.sort(x)
    assert (above == len(x) - np.searchsorted(srt, u, side="right")).all()
    assert (equal == np.searchsorted(srt, u, side="right") - np.searchsorted(srt, u, side="left")).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40_000), st.integers(0, 3), st.sampled_from([10, 10**6, 2**62]))
def test_smallest_duplicate_matches_sort(seed, n, n_dups, high):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, high, n)
    for _ in range(n_dups if n else 0):
        keys[rng.integers(0, n)] = keys[rng.integers(0, n)]
    srt = np.sort(keys)
    dup = srt[1:][srt[1:] == srt[:-1]]
    assert _smallest_duplicate(keys) == (int(dup[0]) if len(dup) else None)


def test_smallest_duplicate_hostile_inputs():
    assert _smallest_duplicate(np.zeros(10_000, dtype=np.int64)) == 0  # one key repeated
    keys = np.arange(50_000, dtype=np.int64) << 40  # distinct keys differing in high bits only
    assert _smallest_duplicate(keys) is None
    keys[-1] = keys[123]
    assert _smallest_duplicate(keys) == 123 << 40


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["Q", "R", "ab", "", "Z9x", "é"]),
    st.integers(1, 20),
    st.lists(st.integers(0, 10**20 - 1), min_size=1, max_size=30),
    st.sampled_from([None, "short", "letter", "prefix", "unicode", "nul"]),
)
def test_digit_codes_agree_with_string_order(prefix, n_digits, numbers, spoil):
    ids = [f"{prefix}{v % 10**n_digits:0{n_digits}d}" for v in numbers]
    if spoil == "short":
        ids.append(ids[0][:-1])
    elif spoil == "letter":
        ids.append(ids[0][:-1] + "x")
    elif spoil == "prefix" and prefix:
        ids.append("W" * len(prefix) + ids[0][len(prefix):])
    elif spoil == "unicode":
        ids.append(ids[0][:-1] + "\u0661")  # Arabic-Indic digit one: not ASCII
    elif spoil == "nul":
        ids.append(ids[0][:-1] + "\0")
    arr = np.array(ids)
    codes = _digit_codes([arr[:3], arr[3:]])
    one_form = (spoil is None or (spoil == "prefix" and not prefix)) and prefix != "é"
    if n_digits <= 18:  # longer digit runs only take the fast path when their leading digits agree
        assert (codes is not None) == one_form, (ids, codes)
    if codes is None:
        return
    flat = np.concatenate(codes)
    for a, b, ca, cb in zip(ids, ids[1:], flat, flat[1:]):
        assert (a < b) == (ca < cb) and (a == b) == (ca == cb)
    (via_api,), _ = encode_ids(arr)
    assert via_api.tolist() == flat.tolist() or len(flat) and flat.max() >= 10_000_000


def test_scoring_accepts_strided_and_byte_swapped_ids():
    q = np.array(["Q01", "Qxx", "Q02", "Qxx", "Q03", "Qxx"])[::2]
    r = np.array(["R01", "R02", "R09"]).astype(">U3")
    gt = Disc21GroundTruth.from_arrays(np.array(["Q01", "Q02", "Q03"]), np.array(["R01", "R02", ""]))
    res = score_predictions(q, r, np.array([0.9, 0.8, 0.7]), gt)
    assert res["micro_ap"] == 1.0 and res["n_predictions"] == 3


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_fast_equals_slow_above_hashing_threshold(seed, fixed):
    """Enough predictions (> 4096) for the hashed duplicate rounds and bucketed counts to run."""
    rng = np.random.default_rng(seed)
    name = (lambda p, i: f"{p}{i:05d}") if fixed else (lambda p, i: f"{p}{i}")
    gt_rows = [(name("Q", i), name("R", int(rng.integers(0, 900))) if rng.random() < 0.5 else "") for i in range(60)]
    qi, ri = rng.integers(0, 80, 6000), rng.integers(0, 900, 6000)
    hit = rng.random(6000) < 0.05
    ri[hit & (qi < 60)] = [int(gt_rows[i][1][1:] or 0) for i in qi[hit & (qi < 60)]]
    pairs = sorted({(name("Q", a), name("R", b)) for a, b in zip(qi.tolist(), ri.tolist())})
    s = np.round(rng.random(len(pairs)), 2)
    preds = [(q, r, float(v)) for (q, r), v in zip(pairs, s)]
    for scorer in ("official", "isc2021"):
        assert_same(fast_score(preds, gt_rows, scorer), slow_score(preds, gt_rows, scorer))
    dup = preds + [preds[len(preds) // 2][:2] + (0.5,), preds[7][:2] + (0.1,)]
    first = min(dup[len(preds) // 2], dup[7])[:2]
    with pytest.raises(ValueError, match=rf"duplicate prediction \({first[0]}, {first[1]}\) at rows"):
        fast_score(dup, gt_rows, "official")


# ------------------------------------------------------------------------- precision-recall curve


def slow_pr_curve(preds, gt_rows, scorer):
    """(recall, precision) at each true positive of the pessimistic order, written out with loops."""
    listed = {q for q, _ in gt_rows}
    pairs = {(q, r) for q, r in gt_rows if r}
    if scorer == "official":
        preds = [p for p in preds if p[0] in listed]
    labelled = sorted(((s, (q, r) in pairs) for q, r, s in preds), key=lambda t: (-t[0], t[1]))
    tp, points = 0, []
    for i, (_, y) in enumerate(labelled, start=1):
        tp += y
        if y:
            points.append((tp / len(pairs), tp / i))
    return points


@settings(max_examples=200, deadline=None)
@given(problems(), st.sampled_from(["official", "isc2021"]))
def test_pr_curve_is_the_curve_at_every_true_positive(problem, scorer):
    preds, gt_rows = problem
    gt = Disc21GroundTruth.from_arrays(np.array([q for q, _ in gt_rows], dtype=str), np.array([r for _, r in gt_rows], dtype=str))
    q, r, s = (np.array([p[i] for p in preds], dtype=t) for i, t in ((0, str), (1, str), (2, np.float64)))
    out = score_predictions(q, r, s, gt, scorer=scorer, pr_points=1000)
    expected = slow_pr_curve(preds, gt_rows, scorer) if out["n_gt_pairs"] else []
    assert len(out["pr_curve"]) == len(expected)
    for (fr, fp), (er, ep) in zip(out["pr_curve"], expected):
        assert fr == pytest.approx(er, abs=1e-6) and fp == pytest.approx(ep, abs=1e-6)
    # micro-AP is the mean precision at the true positives: the curve carries it
    assert sum(p for _, p in out["pr_curve"]) / max(out["n_gt_pairs"], 1) == pytest.approx(out["micro_ap"], abs=1e-5)
    assert "pr_curve" not in score_predictions(q, r, s, gt, scorer=scorer)  # only when asked for


@pytest.mark.parametrize("n_tp", [199, 200, 201, 1500])
def test_pr_curve_downsampled_keeps_ends_and_the_r_p90_point(n_tp):
    rng = np.random.default_rng(n_tp)
    n = 2000
    gt = Disc21GroundTruth.from_arrays(np.array([f"Q{i:05d}" for i in range(n)]),
                                       np.array([f"R{i:05d}" for i in range(n)]))
    qs = np.array([f"Q{i:05d}" for i in range(n)])
    refs = np.array([f"R{i:05d}" if i < n_tp else f"R{(i + 1) % n:05d}" for i in range(n)])
    scores = np.where(np.arange(n) < n_tp, rng.random(n) + 0.3, rng.random(n))  # mostly positives first
    preds = list(zip(qs.tolist(), refs.tolist(), scores.tolist()))
    full = slow_pr_curve(preds, list(zip(qs.tolist(), [f"R{i:05d}" for i in range(n)])), "official")
    out = score_predictions(qs, refs, scores, gt, pr_points=200)
    curve = out["pr_curve"]
    assert len(curve) == n_tp if n_tp <= 200 else 199 <= len(curve) <= 200
    exact = {(round(r, 6), round(p, 6)) for r, p in full}
    assert all(tuple(pt) in exact for pt in curve)
    assert tuple(curve[0]) == (round(full[0][0], 6), round(full[0][1], 6))
    assert tuple(curve[-1]) == (round(full[-1][0], 6), round(full[-1][1], 6))
    assert all(a[0] < b[0] for a, b in zip(curve, curve[1:]))
    if out["recall_at_p90"]:
        assert any(r == pytest.approx(out["recall_at_p90"], abs=1e-6) and p >= 0.9 for r, p in curve)


def test_metric_plugin_stores_the_curve_and_declares_its_main_value():
    gt = Disc21GroundTruth.from_arrays(np.array(["Q1", "Q2"]), np.array(["R1", "R2"]))
    retrieval = Retrieval(np.array(["Q1", "Q2"]), np.array(["R1", "R2"]),
                          Neighbors.knn(np.array([[0, 1], [0, 1]]), np.array([[0.9, 0.5], [0.8, 0.7]])))
    out = Disc21Metrics()(gt, retrieval)
    assert out["pr_curve"] == [[0.5, 1.0], [1.0, 0.666667]]  # order: Q1-R1 (0.9, true), Q2-R1 (0.8), Q2-R2 (0.7, true)
    assert Disc21Metrics.main_metric in out
