"""``harness score roxford5k|rparis6k RANKS.npy --ground-truth gnd.pkl|gnd.json``."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .groundtruth import QueryGnd, RevisitopGroundTruth
from .metrics import PROTOCOLS, compute_revisitop


def ground_truth_from_dict(name: str, data: dict[str, Any]) -> RevisitopGroundTruth:
    """Typed ground truth from the validated plain dict of :func:`harness.submissions.read_revisitop_gnd`."""
    gnd = tuple(
        QueryGnd(
            easy=np.asarray(g["easy"], dtype=np.int64),
            hard=np.asarray(g["hard"], dtype=np.int64),
            junk=np.asarray(g["junk"], dtype=np.int64),
            bbx=tuple(float(v) for v in g["bbx"]),  # type: ignore[arg-type]
        )
        for g in data["gnd"]
    )
    return RevisitopGroundTruth(name=name, imlist=tuple(data["imlist"]), qimlist=tuple(data["qimlist"]), gnd=gnd)


def load_ground_truth(path: str | os.PathLike[str], name: str) -> RevisitopGroundTruth:
    """Read ``gnd_<name>.pkl`` (restricted unpickler) or its JSON form, validated."""
    from harness.submissions import read_revisitop_gnd

    return ground_truth_from_dict(name, read_revisitop_gnd(path))


class RevisitopScorer:
    """Score rankings (K, n_queries) in .npy against a revisitop ground truth (.pkl or .json)."""

    version = "1"

    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, submission: str, ground_truth: str) -> dict[str, Any]:
        from harness.submissions import read_rankings_npy

        gt = load_ground_truth(ground_truth, self.name)
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
    return factory
