"""Deterministic random generators: one per (seed, item id, purpose), independent of processing order,
so a query set or an attack grid is reproducible item by item, in any process."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_rng(seed: int, *names: object) -> np.random.Generator:
    """A generator determined by ``seed`` and the ``names`` (item id, transform name, ...)."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(str(n) for n in names)).encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
