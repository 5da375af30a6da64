"""Active indexing (Fernandez et al., arXiv 2210.10620): copies of database images retrieved through a
compressed index, with the database images passive or activated; rank metrics (R@k, MRR)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_pipelines(register):
    from .pipeline import ActiveIndexingPipeline

    register("active_indexing", ActiveIndexingPipeline)


@hookimpl
def register_metrics(register):
    from .metrics import OwnRank

    register("active_indexing", OwnRank)
