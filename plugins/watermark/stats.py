"""Null-hypothesis models of the detectors: exact p-values and the thresholds they imply.

- Hypercone (SSL zero-bit, protocols.md §4): for a feature f and a secret unit carrier a in dimension
  D, c = |cos(f, a)|. If the carrier is uniformly random on the sphere (independent of the image),
  P(|cos| >= c) = I_{1-c^2}((D-1)/2, 1/2), the regularized incomplete beta. This is the **two-sided**
  "dual cone" of the reference (the image is flagged when its feature lies in the cone around a or
  around -a); D = 2048, FPR 1e-6 gives cos(theta) = 0.10782 (the one-sided half would give 0.10479).
- Bit strings (DWT-DCT, RivaGAN, SSL multi-bit): an unmarked image's decoded bits match the key's k
  message bits like fair coins, so m matching bits have p-value P[Bin(k, 1/2) >= m] (one-sided),
  computed exactly from integer binomial coefficients.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def hypercone_pvalue(cos: np.ndarray | float, dim: int) -> np.ndarray:
    """P(|cos(u, a)| >= |cos|) for u uniform on the unit sphere of R^dim (float64 array)."""
    from scipy.special import betainc

    if dim < 2:
        raise ValueError(f"the hypercone test needs dimension >= 2 (got {dim})")
    c = np.minimum(np.abs(np.asarray(cos, dtype=np.float64)), 1.0)
    return betainc((dim - 1) / 2.0, 0.5, 1.0 - c * c)


def hypercone_threshold(dim: int, fpr: float) -> float:
    """cos(theta) such that an unmarked image has |cos| >= cos(theta) with probability ``fpr``."""
    from scipy.special import betaincinv

    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1) (got {fpr})")
    return float(np.sqrt(1.0 - betaincinv((dim - 1) / 2.0, 0.5, fpr)))


@lru_cache(maxsize=64)
def _binomial_tail(k: int) -> np.ndarray:
    """tail[m] = P[Bin(k, 1/2) >= m] for m = 0..k+1, each a correctly rounded double."""
    counts = [math.comb(k, j) for j in range(k + 1)]
    total = 1 << k
    tails, acc = [0.0] * (k + 2), 0
    for m in range(k, -1, -1):
        acc += counts[m]
        tails[m] = acc / total  # int / int: exact rational rounded once
    return np.array(tails, dtype=np.float64)


def binomial_pvalue(matches: np.ndarray | int, k: int) -> np.ndarray:
    """P[Bin(k, 1/2) >= m] for each number of matching bits m in 0..k (float64 array)."""
    m = np.asarray(matches)
    if k < 1:
        raise ValueError(f"a bit string needs k >= 1 bits (got {k})")
    if m.size and (m.min() < 0 or m.max() > k or not np.array_equal(m, np.round(m))):
        raise ValueError(f"matching bits must be integers in 0..{k}")
    return _binomial_tail(int(k))[m.astype(np.int64)]
