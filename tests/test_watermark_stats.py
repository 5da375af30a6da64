"""Null models of the detectors: the check values of protocols.md §4, slow references, and the
empirical FPR of the analytic threshold on unmarked data against its binomial confidence interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from harness_plugins.watermark import keys
from harness_plugins.watermark.metrics import AnalyticTPR
from harness_plugins.watermark.detections import Detections
from harness_plugins.watermark.stats import binomial_pvalue, hypercone_pvalue, hypercone_threshold


def test_hypercone_check_value_is_the_two_sided_dual_cone():
    assert hypercone_threshold(2048, 1e-6) == pytest.approx(0.10782, abs=5e-6)
    # the one-sided half-cone would be the two-sided threshold at twice the FPR: 0.10479
    assert hypercone_threshold(2048, 2e-6) == pytest.approx(0.10479, abs=5e-6)
    c = hypercone_threshold(2048, 1e-6)
    assert hypercone_pvalue(c, 2048) == pytest.approx(1e-6, rel=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 10, 96, 512, 2048])
@pytest.mark.parametrize("c", [0.0, 0.05, 0.2, 0.5, 0.9, 1.0])
def test_hypercone_pvalue_against_the_sphere_area_integral(dim, c):
    # density of cos(u, a) for u uniform on S^{dim-1}: proportional to (1 - t^2)^((dim - 3) / 2)
    f = lambda t: (1.0 - t * t) ** ((dim - 3) / 2.0)  # noqa: E731
    total = integrate.quad(f, 0.0, 1.0, epsabs=0, epsrel=1e-12, limit=200)[0]
    tail = integrate.quad(f, c, 1.0, epsabs=0, epsrel=1e-12, limit=200)[0] if c < 1 else 0.0
    assert float(hypercone_pvalue(c, dim)) == pytest.approx(tail / total, rel=1e-7, abs=1e-300)
    assert float(hypercone_pvalue(-c, dim)) == float(hypercone_pvalue(c, dim))  # two-sided


def test_binomial_check_vector():
    assert float(binomial_pvalue(41, 48)) == pytest.approx(3.1e-7, rel=0.01)
    assert float(binomial_pvalue(40, 48)) == pytest.approx(1.65e-6, rel=0.01)
    for k in (1, 7, 32, 48, 100):
        m = np.arange(k + 1)
        np.testing.assert_allclose(binomial_pvalue(m, k), stats.binom.sf(m - 1, k, 0.5), rtol=1e-12)
    assert float(binomial_pvalue(0, 32)) == 1.0
    with pytest.raises(ValueError):
        binomial_pvalue(33, 32)


def test_carriers_are_orthonormal_and_key_determined():
    a = keys.carriers(7, 16, 64)
    np.testing.assert_allclose(a @ a.T, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(a, keys.carriers(7, 16, 64))
    assert not np.allclose(a, keys.carriers(8, 16, 64))
    one = keys.carriers(7, 1, 64)
    assert one.shape == (1, 64) and np.linalg.norm(one) == pytest.approx(1.0)
    m = keys.message_bits(3, 48)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} and np.array_equal(m, keys.message_bits(3, 48))


def _within_ci(flagged: int, n: int, p: float) -> None:
    lo, hi = stats.binomtest(flagged, n, p).proportion_ci(confidence_level=0.999)
    assert lo <= p <= hi, f"empirical FPR {flagged / n} (99.9% CI [{lo:.4f}, {hi:.4f}]) excludes {p}"


def test_hypercone_empirical_fpr_on_random_features():
    """Unmarked = features independent of the (uniformly random) carrier: p <= 0.05 for 5% of them."""
    rng = np.random.default_rng(0)
    n, dim, t = 2000, 96, 0.05
    feats = rng.standard_normal((n, dim)) * rng.uniform(0.1, 10, (n, 1))  # any norm
    cars = np.stack([keys.carriers(k, 1, dim)[0] for k in range(n)])
    cos = np.sum(feats * cars, axis=1) / np.linalg.norm(feats, axis=1)
    p = hypercone_pvalue(cos, dim)
    table = Detections([f"i{k}" for k in range(n)], ["none"] * n, [False] * n, np.abs(cos), p)
    observed = AnalyticTPR(fpr=[t])(None, table)["none"][f"fpr@{t:g}"]
    _within_ci(round(observed * n), n, t)


def test_binomial_empirical_fpr_on_random_bits():
    """Unmarked = decoded bits independent of the key's message: the rate of p <= 0.05 is the exact
    binomial tail at the threshold (<= 0.05 for a discrete test), within its confidence interval."""
    rng = np.random.default_rng(1)
    n, k, t = 2000, 32, 0.05
    bits = rng.integers(0, 2, (n, k), dtype=np.uint8)
    msgs = np.stack([keys.message_bits(i, k) for i in range(n)])
    p = binomial_pvalue((bits == msgs).sum(axis=1), k)
    threshold_m = min(m for m in range(k + 1) if float(binomial_pvalue(m, k)) <= t)
    exact = float(binomial_pvalue(threshold_m, k))
    assert exact <= t and math.isclose(exact, stats.binom.sf(threshold_m - 1, k, 0.5))
    _within_ci(int((p <= t).sum()), n, exact)
