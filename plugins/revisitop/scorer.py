"""``harness score roxford5k|rparis6k RANKS.npy --ground-truth gnd.pkl|gnd.json``."""

from __future__ import annotations

from typing import Any, Callable

from .groundtruth import RevisitopGroundTruth
from .metrics import PROTOCOLS, compute_revisitop


class RevisitopScorer:
    """Score rankings (K, n_queries) in .npy against a revisitop ground truth (.pkl or .json).

    Column q lists database ids best first; -1 is "no result" (faiss pads with it) and scores as a
    negative at its rank, as in revisitop's ``compute_map``."""

    version = "1"
    display = {"n_*": "integer", "*": "percent"}  # mAP and mP@k as percentages, as papers print them
    main_metric = "medium.map"  # leaderboards rank by it: nested values are named protocol.value
    board_values = ("easy.map", "medium.map", "hard.map", "medium.mp@10", "hard.mp@10")  # columns of `board show`

    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, submission: str, ground_truth: str) -> dict[str, Any]:
        from harness_plugins.revisitop.files import read_rankings_npy

        from harness.errors import SubmissionError

        gt = RevisitopGroundTruth.from_file(ground_truth, self.name)
        if gt.n_queries == 0:
            raise SubmissionError(ground_truth, "lists no query (qimlist is empty): there is nothing to score")
        ranks = read_rankings_npy(submission, n_queries=gt.n_queries)
        result = compute_revisitop(ranks, gt)
        out: dict[str, Any] = {p: {m: v for m, v in result[p].items() if m != "aps"} for p in PROTOCOLS}
        out["n_queries"] = gt.n_queries
        return out


def make_scorer(name: str) -> Callable[[], RevisitopScorer]:
    """A scorer factory for one dataset name; it takes no options (``--scorer``, ``--max-results``
    and ``--knn`` are DISC21 options, reported as unsupported here)."""

    def factory() -> RevisitopScorer:
        return RevisitopScorer(name)

    factory.__doc__ = f"Score {name} rankings (.npy, shape (K, 70)) against gnd_{name}.pkl or its JSON form."
    factory.__name__ = f"{name}_scorer"
    factory.version = RevisitopScorer.version  # type: ignore[attr-defined]
    factory.display = RevisitopScorer.display  # type: ignore[attr-defined]
    factory.main_metric = RevisitopScorer.main_metric  # type: ignore[attr-defined]
    factory.board_values = RevisitopScorer.board_values  # type: ignore[attr-defined]
    return factory
