"""The revisitop ground truth (gnd_<name>.pkl) in typed form."""

from __future__ import annotations

import os
import harness_plugins.revisitop.files as revisitop_files
from dataclasses import dataclass
from typing import Any

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

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> RevisitopGroundTruth:
        """Typed ground truth from the validated plain dict of :func:`harness.revisitop_files.read_revisitop_gnd`."""
        gnd = tuple(
            QueryGnd(
                easy=np.asarray(g["easy"], dtype=np.int64).ravel(),
                hard=np.asarray(g["hard"], dtype=np.int64).ravel(),
                junk=np.asarray(g["junk"], dtype=np.int64).ravel(),
                bbx=tuple(float(v) for v in g["bbx"]),  # type: ignore[arg-type]
            )
            for g in data["gnd"]
        )
        return cls(name=name, imlist=tuple(map(str, data["imlist"])), qimlist=tuple(map(str, data["qimlist"])), gnd=gnd)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], name: str) -> RevisitopGroundTruth:
        """Read ``gnd_<name>.pkl`` (restricted unpickler) or its JSON form, validated."""
        from .files import read_revisitop_gnd  # the safe reader (limits, structure)

        return cls.from_dict(read_revisitop_gnd(path), name)
