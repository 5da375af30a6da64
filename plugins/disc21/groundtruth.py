"""The DISC21 ground truth in typed form: which queries the GT file lists, and the matched pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Disc21GroundTruth:
    """``query_ids``: every query the GT file lists, matched or not (unique, str).
    ``pair_query_ids`` / ``pair_reference_ids``: the matched pairs (at most one per query), row-aligned."""

    query_ids: np.ndarray
    pair_query_ids: np.ndarray
    pair_reference_ids: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(len(self.pair_query_ids))
