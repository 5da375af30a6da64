"""The DISC21 ground truth in typed form: which queries the GT file lists, and the matched pairs."""

from __future__ import annotations

import os
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

    def restrict(self, query_ids: np.ndarray) -> "Disc21GroundTruth":
        """The ground truth of a subset of the queries (a per-operation breakdown scores each subset)."""
        keep = np.isin(self.query_ids, np.asarray(query_ids, dtype=str))
        pair_keep = np.isin(self.pair_query_ids, self.query_ids[keep])
        return Disc21GroundTruth(self.query_ids[keep], self.pair_query_ids[pair_keep], self.pair_reference_ids[pair_keep])

    @classmethod
    def from_arrays(cls, query_ids: np.ndarray, reference_ids: np.ndarray) -> "Disc21GroundTruth":
        """From one row per listed query, ``''`` as reference for a query without a match."""
        query_ids = np.asarray(query_ids, dtype=str)
        reference_ids = np.asarray(reference_ids, dtype=str)
        matched = np.strings.str_len(reference_ids) > 0
        return cls(query_ids, query_ids[matched], reference_ids[matched])

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> "Disc21GroundTruth":
        """Read ``query_id,reference_id`` (header optional) with the safe reader; rejects a query listed twice."""
        from harness_plugins.disc21.files import read_pairs_csv

        return cls.from_arrays(*read_pairs_csv(path))
