"""Revisited Oxford and Paris (ROxford5k, RParis6k, optional R1M distractors): dataset, mAP / mP@k /
mR@k metrics under the easy, medium and hard protocols, and the rankings scorer."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_datasets(register):
    from .dataset import RevisitopDataset

    register("revisitop", RevisitopDataset)


@hookimpl
def register_metrics(register):
    from .metrics import RevisitopMetrics

    register("revisitop", RevisitopMetrics)


@hookimpl
def register_scorers(register):
    from .scorer import make_scorer

    register("roxford5k", make_scorer("roxford5k"))
    register("rparis6k", make_scorer("rparis6k"))
