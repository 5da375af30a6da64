"""``harness score disc21``: a matching CSV or a descriptor HDF5 submission against a GT CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import SubmissionError, UserError

from .groundtruth import Disc21GroundTruth
from .metrics import PR_POINTS, SCORERS, score_predictions

#: The isc2021 scripts' fixed number of global results for descriptor submissions.
ISC2021_MAX_RESULTS = 500_000


class Disc21Scorer:
    """Score a DISC21 submission: matching track (.csv) or descriptor track (.h5 / .hdf5)."""

    version = "1"
    display = {"threshold*": "number", "n_*": "integer", "k": "integer", "*": "percent"}
    main_metric = "micro_ap"  # leaderboards rank by it (`harness board show`)
    options_help = {
        "scorer": "official (leaderboard: predictions of queries the GT does not list are dropped) or isc2021 "
                  "(organizers' library: they count as false positives). Default: official.",
        "max_results": "Descriptor track: K of the global top-K search (default 10 x GT-listed queries present).",
        "knn": "Descriptor track: per-query kNN instead of global top-K (non-official, as SSCD).",
    }

    def __init__(
        self,
        scorer: Literal["official", "isc2021"] = "official",
        max_results: int | None = None,
        knn: int | None = None,
    ) -> None:
        if scorer not in SCORERS:
            raise UserError(f"unknown scorer {scorer!r}: expected one of {', '.join(SCORERS)}")
        if max_results is not None and knn is not None:
            raise UserError("--max-results and --knn are exclusive: give one search mode")
        for name, value in (("max_results", max_results), ("knn", knn)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        self.scorer = scorer
        self.max_results = max_results
        self.knn = knn

    def score(self, submission: str, ground_truth: str) -> dict[str, Any]:
        # Cheap checks first: the submission type and options, before parsing the GT file.
        suffix = Path(submission).suffix.lower()
        if suffix not in (".csv", ".h5", ".hdf5"):
            raise SubmissionError(
                submission, f"unknown submission type {suffix or '(none)'!r}: expected .csv (matching) or .h5 (descriptors)"
            )
        if suffix == ".csv" and (self.max_results is not None or self.knn is not None):
            raise UserError("--max-results / --knn apply to descriptor submissions (.h5) only")
        gt = Disc21GroundTruth.from_csv(ground_truth)
        if suffix != ".csv":
            return self._score_descriptors(submission, gt)
        from harness.submissions import read_matching_csv

        q, r, s = read_matching_csv(submission)
        return {**score_predictions(q, r, s, gt, scorer=self.scorer, pr_points=PR_POINTS), "track": "matching"}

    def _score_descriptors(self, path: str | os.PathLike[str], gt: Disc21GroundTruth) -> dict[str, Any]:
        from harness.parts import Retrieval
        from harness.submissions import read_descriptor_h5
        from harness_plugins.faiss.search import global_top_k, knn_search

        sub = read_descriptor_h5(path)
        qids, xq = sub["query_ids"], sub["query"]
        if self.scorer == "official":  # the leaderboard searches only the queries the GT lists
            keep = np.isin(qids, np.asarray(gt.query_ids, dtype=str))
            qids, xq = qids[keep], xq[keep]
        info: dict[str, Any]
        if self.knn is not None:
            neighbors = knn_search(xq, sub["reference"], self.knn, metric="l2")
            info = {"search": "knn", "k": self.knn}
        else:
            default = 10 * len(gt.query_ids) if self.scorer == "official" else ISC2021_MAX_RESULTS
            k = self.max_results if self.max_results is not None else default
            neighbors = global_top_k(xq, sub["reference"], k, metric="l2")
            info = {"search": "global_top_k", "k": k}
        q, r, s = Retrieval(qids, sub["reference_ids"], neighbors).predictions()
        result = score_predictions(q, r, s, gt, scorer=self.scorer, pr_points=PR_POINTS)
        return {**result, "track": "descriptor", **info, "n_queries_searched": int(len(qids))}
