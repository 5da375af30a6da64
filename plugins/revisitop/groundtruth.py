"""The revisitop ground truth (gnd_<name>.pkl) in typed form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QueryGnd:
    easy: np.ndarray  # int64, 0-based indices into imlist
    hard: np.ndarray
    junk: np.ndarray
    bbx: tuple[float, float, float, float]


@dataclass(frozen=True)
class RevisitopGroundTruth:
    name: str  # "roxford5k" / "rparis6k"
    imlist: tuple[str, ...]  # database image names (without .jpg)
    qimlist: tuple[str, ...]  # query image names
    gnd: tuple[QueryGnd, ...]  # one per query, aligned with qimlist

    @property
    def n_queries(self) -> int:
        return len(self.qimlist)
