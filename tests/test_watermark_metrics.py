"""Watermark detection metrics against deliberately simple slow implementations (protocols.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import UserError
from harness.testing import registry_with
from harness_plugins.watermark.detections import Detections
from harness_plugins.watermark.metrics import (
    AUROC,
    AnalyticTPR,
    BitAccuracy,
    EmpiricalTPR,
    WordAccuracy,
    allowed_false_positives,
)

# -- slow references ---------------------------------------------------------------------------------


def slow_analytic(rows, t):
    """rows: (marked, p) with p None for "no p-value"; flagged iff p is not None and p <= t."""
    pos = [p for m, p in rows if m]
    neg = [p for m, p in rows if not m]
    flag = lambda p: p is not None and p <= t  # noqa: E731
    tpr = sum(map(flag, pos)) / len(pos) if pos else None
    fpr = sum(map(flag, neg)) / len(neg) if neg else None
    return tpr, fpr


def slow_empirical(rows, t):
    """The smallest observed score T whose rule "score >= T" has empirical FPR <= t (ties at T flagged);
    "flag nothing" when no observed score qualifies."""
    pos = [s for m, s in rows if m]
    neg = [s for m, s in rows if not m]
    if not pos or not neg:
        return None, None
    for T in sorted({s for _, s in rows}):
        fpr = sum(1 for s in neg if s >= T) / len(neg)
        if fpr <= t:
            return sum(1 for s in pos if s >= T) / len(pos), fpr
    return 0.0, 0.0


def slow_auroc(rows):
    pos = [s for m, s in rows if m]
    neg = [s for m, s in rows if not m]
    if not pos or not neg:
        return None
    total = 0.0
    for a in pos:
        for b in neg:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


def table(rows, cell="c", p=None, bits=None, message=None):
    n = len(rows)
    return Detections(
        image_id=[f"i{k}" for k in range(n)],
        cell=[cell] * n,
        marked=[m for m, _ in rows],
        score=[s for _, s in rows],
        p_value=p if p is not None else [math.nan] * n,
        bits=bits,
        message=message,
    )


# score values from a small grid force ties; infinities are legal scores
scores = st.one_of(st.integers(-3, 3).map(float), st.floats(-5, 5, allow_nan=False, width=32), st.sampled_from([math.inf, -math.inf]))
row_lists = st.lists(st.tuples(st.booleans(), scores), min_size=0, max_size=40)
targets = st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.29, 1 / 3, 0.5, 0.7, 0.999])


@settings(max_examples=300, deadline=None)
@given(row_lists, targets)
def test_empirical_tpr_matches_slow(rows, t):
    values = EmpiricalTPR(fpr=[t])(None, table(rows))["c"] if rows else None
    want_tpr, want_fpr = slow_empirical(rows, t)
    if not rows:
        return
    assert values[f"tpr@{t:g}"] == want_tpr
    assert values[f"fpr@{t:g}"] == want_fpr
    if values[f"fpr@{t:g}"] is not None:
        assert values[f"fpr@{t:g}"] <= t  # never exceeds the target


@settings(max_examples=300, deadline=None)
@given(row_lists)
def test_auroc_matches_slow(rows):
    if not rows:
        return
    got = AUROC()(None, table(rows))["c"]["auroc"]
    want = slow_auroc(rows)
    assert (got is None and want is None) or got == pytest.approx(want, abs=1e-12)


p_values = st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0.0, 1e-6, 0.01, 1.0]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), p_values), min_size=1, max_size=30), st.sampled_from([1e-6, 0.01, 0.05, 0.5]))
def test_analytic_tpr_matches_slow(rows, t):
    if all(p is None for _, p in rows):
        rows = rows + [(True, 0.5)]  # a table without any p-value is an error (tested below)
    tab = table([(m, 0.0) for m, _ in rows], p=[math.nan if p is None else p for _, p in rows])
    got = AnalyticTPR(fpr=[t])(None, tab)["c"]
    want_tpr, want_fpr = slow_analytic(rows, t)
    assert got[f"tpr@{t:g}"] == want_tpr and got[f"fpr@{t:g}"] == want_fpr


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.lists(st.tuples(st.booleans(), st.integers(0, 4095), st.integers(0, 4095)), min_size=1, max_size=20))
def test_bit_and_word_accuracy_match_slow(k, rows):
    bits = np.array([[(b >> j) & 1 for j in range(k)] for _, b, _ in rows], dtype=np.uint8)
    msg = np.array([[(m >> j) & 1 for j in range(k)] for _, _, m in rows], dtype=np.uint8)
    tab = table([(mk, 0.0) for mk, _, _ in rows], bits=bits, message=msg)
    marked = [i for i, (mk, _, _) in enumerate(rows) if mk]
    per_image = [sum(bits[i, j] == msg[i, j] for j in range(k)) / k for i in marked]
    bit = BitAccuracy()(None, tab)["c"]["bit_accuracy"]
    word = WordAccuracy()(None, tab)["c"]["word_accuracy"]
    if not marked:
        assert bit is None and word is None
    else:
        assert bit == pytest.approx(sum(per_image) / len(per_image), abs=1e-12)
        assert word == pytest.approx(sum(a == 1.0 for a in per_image) / len(per_image), abs=1e-12)


def test_allowed_false_positives_is_exact_in_floating_point():
    for n in range(1, 400):
        for t in (0.01, 0.07, 0.29, 0.001, 0.5, 1 / 3, 0.999):
            m = allowed_false_positives(n, t)
            assert m / n <= t and (m + 1) / n > t
    assert allowed_false_positives(100, 0.29) == 29  # floor(0.29 * 100) is 28 in floating point


# -- edge cases ----------------------------------------------------------------------------------------


def test_empirical_edge_cases():
    # all scores equal: the threshold is that score, nothing strictly above it
    same = [(True, 1.0)] * 5 + [(False, 1.0)] * 5
    v = EmpiricalTPR(fpr=[0.5])(None, table(same))["c"]
    assert v["tpr@0.5"] == 0.0 and v["fpr@0.5"] == 0.0 and v["threshold@0.5"] == 1.0
    # no negatives / no positives: undefined
    v = EmpiricalTPR()(None, table([(True, 1.0), (True, 2.0)]))["c"]
    assert v["tpr@0.01"] is None and v["n_unmarked"] == 0
    v = EmpiricalTPR()(None, table([(False, 1.0)]))["c"]
    assert v["tpr@0.001"] is None
    # perfect separation with 100 negatives: at 1% FPR one negative may pass, the threshold is the second highest
    rows = [(False, float(i)) for i in range(100)] + [(True, 98.5), (True, 200.0)]
    v = EmpiricalTPR(fpr=[0.01, 0.001])(None, table(rows))["c"]
    assert v["threshold@0.01"] == 98.0 and v["tpr@0.01"] == 1.0 and v["fpr@0.01"] == 0.01
    assert v["threshold@0.001"] == 99.0 and v["tpr@0.001"] == 0.5 and v["fpr@0.001"] == 0.0


def test_auroc_ties_and_degenerate():
    assert AUROC()(None, table([(True, 1.0), (False, 1.0)]))["c"]["auroc"] == 0.5
    assert AUROC()(None, table([(True, 2.0), (False, 1.0)]))["c"]["auroc"] == 1.0
    assert AUROC()(None, table([(True, 0.0), (False, 1.0)]))["c"]["auroc"] == 0.0
    assert AUROC()(None, table([(True, 0.0)]))["c"]["auroc"] is None


def test_analytic_needs_p_values_and_nan_is_not_flagged():
    with pytest.raises(UserError, match="no p-values.*tpr_at_fpr"):
        AnalyticTPR()(None, table([(True, 1.0), (False, 0.0)]))
    v = AnalyticTPR(fpr=[0.01])(None, table([(True, 1.0), (True, 1.0), (False, 0.0)], p=[1e-9, math.nan, math.nan]))["c"]
    assert v["tpr@0.01"] == 0.5 and v["fpr@0.01"] == 0.0
    assert AnalyticTPR(fpr=0.5)(None, table([(True, 0.0)], p=[0.5]))["c"]["fpr@0.5"] is None


def test_bit_metrics_need_bits():
    zero_bit = table([(True, 1.0)])  # no decoded bits: not applicable, so grids can mix methods
    assert BitAccuracy()(None, zero_bit)[next(iter(BitAccuracy()(None, zero_bit)))]["bit_accuracy"] is None
    assert WordAccuracy()(None, zero_bit)[next(iter(WordAccuracy()(None, zero_bit)))]["word_accuracy"] is None
    with pytest.raises(UserError, match="no true message"):
        WordAccuracy()(None, table([(True, 1.0)], bits=np.ones((1, 4))))


@pytest.mark.parametrize("bad", [[], [0.0], [1.0], [0.01, 0.01], [-1e-3]])
def test_bad_fpr_targets(bad):
    for cls in (AnalyticTPR, EmpiricalTPR):
        with pytest.raises(UserError, match="fpr"):
            cls(fpr=bad)


def test_results_are_per_cell_in_order():
    a = table([(True, 2.0), (False, 1.0)], cell="jpeg(quality=50)")
    b = table([(True, 0.0), (False, 1.0)], cell="none")
    both = Detections.concat([b, a])
    out = AUROC()(None, both)
    assert list(out) == ["none", "jpeg(quality=50)"]
    assert out["none"]["auroc"] == 0.0 and out["jpeg(quality=50)"]["auroc"] == 1.0


def test_registration():
    import harness_plugins.watermark as wm

    registry = registry_with(wm)
    assert {"watermark.tpr", "watermark.tpr_at_fpr", "watermark.auroc", "watermark.bit_accuracy",
            "watermark.word_accuracy", "watermark.psnr", "watermark.ssim"} <= set(registry.names("metric"))
    assert {"ssl", "dwt_dct", "dwt_dct_svd", "rivagan"} <= set(registry.names("watermarker"))
    for cls in (AnalyticTPR, EmpiricalTPR, AUROC, BitAccuracy, WordAccuracy):
        assert cls.input_type == "detections" and isinstance(cls.protocol, str) and isinstance(cls.version, str)
