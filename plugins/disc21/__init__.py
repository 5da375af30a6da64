"""DISC21 (Image Similarity Challenge 2021): dataset layouts, micro-AP / R@P90 / recall@rank metrics,
and the submission scorer (matching CSV and descriptor HDF5)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_datasets(register):
    from .dataset import Disc21Dataset

    register("disc21", Disc21Dataset)


@hookimpl
def register_metrics(register):
    from .metrics import Disc21Metrics

    register("disc21", Disc21Metrics)


@hookimpl
def register_scorers(register):
    from .scorer import Disc21Scorer

    register("disc21", Disc21Scorer)
