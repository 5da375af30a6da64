"""The composed-retrieval pipeline: (source image, modification text) queries (SIMAT, CIRR-style)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_pipelines(register):
    from .pipeline import ComposedRetrievalPipeline

    register("composed", ComposedRetrievalPipeline)
