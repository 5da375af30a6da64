"""The retrieval pipeline: queries against a database (copy detection, instance retrieval)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_pipelines(register):
    from .pipeline import RetrievalPipeline

    register("retrieval", RetrievalPipeline)
