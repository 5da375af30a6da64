"""Secrets derived from a watermark key: message bits and carriers, deterministic on every machine.

The key is an integer (the pipeline derives it from the spec seed and the image id). Each secret has
its own purpose string, so the message and the carriers of one key are independent streams.
"""

from __future__ import annotations

import numpy as np

from harness.rng import derive_rng


def key_rng(key: int, purpose: str) -> np.random.Generator:
    return derive_rng(int(key), "watermark", purpose)


def message_bits(key: int, k: int) -> np.ndarray:
    """The k message bits (uint8 0/1) that ``key`` embeds."""
    return key_rng(key, "message").integers(0, 2, size=k, dtype=np.uint8)


def carriers(key: int, k: int, dim: int) -> np.ndarray:
    """k orthonormal carrier rows in R^dim (float64, shape (k, dim)), uniformly distributed: the Q
    factor of a Gaussian matrix with the signs fixed by R's diagonal (Haar measure)."""
    if not 1 <= k <= dim:
        raise ValueError(f"need 1 <= number of carriers ({k}) <= dimension ({dim})")
    g = key_rng(key, f"carriers:{k}x{dim}").standard_normal((dim, k))
    if k == 1:
        return (g / np.linalg.norm(g)).T
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).T
