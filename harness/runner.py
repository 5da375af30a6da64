"""Runs a validated spec: expand its grid, let the pipeline build each cell's stages, evaluate the
metric stages, and return the result document.

The runner knows no pipeline shape: :mod:`harness.stages` evaluates the graph lazily and backwards (a
cached metric loads nothing else), stages with equal keys are shared by every cell that needs them,
and the pipeline plugin (``pipeline:`` in the spec, default ``retrieval``) says what the stages are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.cache import Cache
from harness.context import BuildContext
from harness.plugins import Registry
from harness.progress import Reporter
from harness.spec import Spec
from harness.stages import Engine


class Run:
    """One execution of a spec: build every cell's stages, then evaluate their metrics."""

    def __init__(self, spec: Spec, registry: Registry, cache: Cache, reporter: Reporter | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.engine = Engine(cache, reporter)
        self._shared: dict[str, Any] = {}
        self.contexts: list[BuildContext] = []

    def execute(self) -> list[dict[str, Any]]:
        """``[{overrides, metrics}]`` per cell, in grid order. Every cell is built (parts created, keys
        computed, datasets checked) before any stage is evaluated, so a bad part fails fast."""
        pipeline = self.registry.create("pipeline", self.spec.pipeline, {})
        built = []
        for cell in self.spec.cells:
            ctx = BuildContext(self.engine, self.registry, self._shared, seed=cell.seed, extraction=cell.extraction)
            self.engine.cell = cell.number
            built.append((cell, pipeline.build(cell, ctx)))
            self.contexts.append(ctx)
        self.engine.cell = None
        return [{"overrides": cell.overrides,
                 "metrics": {label: self.engine.value(stage) for label, stage in metric_stages.items()}}
                for cell, metric_stages in built]

    def write_tables(self, output_dir: str | None) -> list[dict[str, Any]]:
        """Write the per-item tables the pipeline declared into a folder of their own under
        ``output_dir`` (unique per run); returns their entries for the result document."""
        tables = self.contexts[0].tables() if self.contexts else []
        if not tables or output_dir is None:
            return []
        import uuid

        folder = Path(output_dir) / f"{self.spec.task}-tables-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        out = []
        for cell, name, stage, write, suffix in tables:
            path = folder / f"cell{cell}-{name}{suffix}"
            write(self.engine.value(stage), path)
            out.append({"cell": cell, "name": name, "path": str(path)})
        return out

    @property
    def parts_used(self) -> dict[str, Any]:
        return self.contexts[0].parts_used() if self.contexts else {}

    def data_info(self) -> dict[str, Any]:
        views = self.contexts[0].datasets() if self.contexts else []
        if len(views) == 1:
            return views[0].info()
        return {"datasets": [v.info() for v in views]}


def run_spec(spec_path: str, overrides: list[str] = (), *, cache_dir: str | None = None, use_cache: bool = True,
             output_dir: str | None = "results", reporter: Reporter | None = None,
             registry: Registry | None = None) -> tuple[dict[str, Any], Path | None]:
    """Validate and run a spec; write the result document under ``output_dir`` (None: do not write)."""
    from harness.plugins import get_registry
    from harness.results import build_document, write_document
    from harness.spec import load_spec

    registry = registry or get_registry()
    spec = load_spec(spec_path, list(overrides), registry)
    cache = Cache(cache_dir, enabled=use_cache)
    started = time.time()
    t0 = time.perf_counter()
    try:
        run = Run(spec, registry, cache, reporter)
        cells = run.execute()
        tables = run.write_tables(output_dir)
        stages = [r.as_dict() for r in run.engine.records()]
    finally:
        cache.close()
    doc = build_document(spec=spec, overrides=list(overrides), parts=run.parts_used, data=run.data_info(),
                         stages=stages, cells=cells, started=started, duration=time.perf_counter() - t0)
    if tables:
        doc["tables"] = tables
    path = write_document(doc, output_dir) if output_dir is not None else None
    return doc, path
