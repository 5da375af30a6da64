"""``harness score disc21``: a matching CSV or a descriptor HDF5 submission against a GT CSV.

Descriptor track (protocols.md §1), as the leaderboard's script does it (DrivenData's
``eval_metrics.py``, ``get_matching_from_descs`` + ``search_with_capped_res``): under ``official``
only the descriptor queries the GT lists are searched and K = 10 x their number; under ``isc2021``
every query is searched with K = 500,000 (``isc/descriptor_matching.py``). The K best pairs are kept
with the upstream tie rule made independent of row order: the pairs strictly closer than the
(K+1)-th smallest distance, so a tie across the cut keeps none of the tied pairs (fewer than K), and
more than K pairs tied at the smallest distance keep nothing. ``--knn k`` (non-official) applies the
same rule per query: the references strictly closer than the query's (k+1)-th nearest.
The exact search runs on a GPU when faiss has GPU support and sees one (``CUDA_VISIBLE_DEVICES=``
keeps it on the CPU), as the organisers' script does (``ngpu=-1``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import SubmissionError, UserError, shown

from .groundtruth import Disc21GroundTruth
from .metrics import PR_POINTS, SCORERS, score_predictions

#: The isc2021 scripts' fixed number of global results for descriptor submissions.
ISC2021_MAX_RESULTS = 500_000
#: Most (query, reference) pairs a descriptor search may keep: 20x the official K of the full dev or
#: final set (10 x 50,000); bounds the search's memory (about 24 bytes a pair) whatever is asked.
MAX_PAIRS = 10_000_000


class Disc21Scorer:
    """Score a DISC21 submission: matching track (.csv) or descriptor track (.h5 / .hdf5)."""

    version = "2"
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
            raise UserError(f"unknown scorer {shown(scorer)}: expected one of {', '.join(SCORERS)}")
        if max_results is not None and knn is not None:
            raise UserError("--max-results and --knn are exclusive: give one search mode")
        for name, value in (("max_results", max_results), ("knn", knn)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {shown(value)}")
            if value > MAX_PAIRS:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} {shown(int(value))} is over the limit of {MAX_PAIRS:,} results")
        self.scorer = scorer
        self.max_results = None if max_results is None else int(max_results)
        self.knn = None if knn is None else int(knn)

    def score(self, submission: str, ground_truth: str) -> dict[str, Any]:
        # Cheap checks first: the submission type and options, before parsing the GT file.
        suffix = Path(submission).suffix.lower()
        if suffix not in (".csv", ".h5", ".hdf5"):
            raise SubmissionError(
                submission, f"unknown submission type {shown(suffix or '(none)')}: expected .csv (matching) or .h5 (descriptors)"
            )
        if suffix == ".csv" and (self.max_results is not None or self.knn is not None):
            raise UserError("--max-results / --knn apply to descriptor submissions (.h5) only")
        gt = Disc21GroundTruth.from_csv(ground_truth)
        if gt.n_pairs == 0:
            raise SubmissionError(
                ground_truth, f"lists {len(gt.query_ids):,} queries but no matched pair: every metric would be 0"
            )
        if suffix != ".csv":
            return self._score_descriptors(submission, gt)
        from harness_plugins.disc21.files import check_unique_predictions, read_matching_rows

        q, r, s, lines = read_matching_rows(submission)
        try:  # the metrics find duplicate pairs on their way (cheaper than a separate pass)
            result = score_predictions(q, r, s, gt, scorer=self.scorer, pr_points=PR_POINTS)
        except ValueError:
            check_unique_predictions(submission, q, r, lines)  # names the lines of a duplicate
            raise
        return {**result, "track": "matching"}

    def _score_descriptors(self, path: str | os.PathLike[str], gt: Disc21GroundTruth) -> dict[str, Any]:
        from harness.parts import Retrieval
        from harness_plugins.disc21.files import read_descriptor_h5
        from harness_plugins.faiss.search import global_top_k, knn_search

        sub = read_descriptor_h5(path)
        qids, xq, xb = sub["query_ids"], sub["query"], sub["reference"]
        if self.scorer == "official":  # the leaderboard searches only the queries the GT lists
            keep = np.isin(qids, np.asarray(gt.query_ids, dtype=str))
            qids, xq = qids[keep], xq[keep]
        nq, nb = len(qids), len(xb)
        info: dict[str, Any]
        if self.knn is not None:
            asked = nq * min(self.knn, nb)
            if asked > MAX_PAIRS:
                raise UserError(
                    f"--knn {self.knn:,} for {nq:,} queries asks for {asked:,} results, over the limit of {MAX_PAIRS:,}"
                )
            neighbors = strict_knn(knn_search(xq, xb, min(self.knn + 1, nb), metric="l2", device="auto"), self.knn)
            info = {"search": "knn", "k": self.knn}
        else:
            # K from the queries searched: 10 x the GT-listed queries present in the submission
            default = 10 * nq if self.scorer == "official" else ISC2021_MAX_RESULTS
            k = self.max_results if self.max_results is not None else default
            if min(k, nq * nb) > MAX_PAIRS:
                raise UserError(
                    f"K = {k:,} results (10 x {nq:,} queries) is over the limit of {MAX_PAIRS:,}; give --max-results"
                )
            deep = k + 1 if k < nq * nb else k  # one more pair: the (K+1)-th distance sets the cut
            neighbors = strict_top_k(global_top_k(xq, xb, deep, metric="l2", device="auto"), k)
            info = {"search": "global_top_k", "k": k}
        q, r, s = Retrieval(qids, sub["reference_ids"], neighbors).predictions()
        result = score_predictions(q, r, s, gt, scorer=self.scorer, unique_pairs=True, pr_points=PR_POINTS)  # distinct ids and pairs
        return {**result, "track": "descriptor", **info, "n_queries_searched": int(nq)}


def strict_top_k(best: Any, k: int) -> Any:
    """From the ``k + 1`` best pairs (pairs-form Neighbors, sorted by score descending), the pairs
    scoring strictly above the (k+1)-th: the K best when there is no tie at the cut, fewer when
    there is. With at most ``k`` pairs in all, every pair."""
    from harness.parts import Neighbors

    q, r, s = best.as_pairs()
    if len(s) <= k:
        return best
    keep = s > s[k]
    return Neighbors.pairs(q[keep], r[keep], s[keep])


def strict_knn(best: Any, k: int) -> Any:
    """Per query, from its ``k + 1`` nearest (knn-form Neighbors, rows best first), those scoring
    strictly above its (k+1)-th; a query with at most ``k`` references keeps them all."""
    from harness.parts import Neighbors

    idx, scores = best.indices, best.scores
    nq, width = idx.shape
    if width <= k:
        return best
    full = idx[:, k] >= 0
    cut = np.where(full, scores[:, k], -np.inf)
    keep = (scores[:, :k] > cut[:, None]) & (idx[:, :k] >= 0)
    q = np.broadcast_to(np.arange(nq, dtype=np.int64)[:, None], (nq, k))[keep]
    return Neighbors.pairs(q, idx[:, :k][keep], scores[:, :k][keep])
