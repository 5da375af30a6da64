"""The composed-retrieval pipeline (SIMAT, CIRR / GeneCIS / FashionIQ style), written once:

dataset -> describe:database (images) and describe:texts (each unique text once) -> compose:prepare
(the composer's database side: heads, normalisation, and the lambda-free products I I^T and T I^T)
-> search (compose the queries, exact inner-product search over the whole database, each query's
source removed) -> metric:<label>, plus a per-query table beside the result document.

Only ``search`` and the metrics depend on the composer's other parameters (lambda): a lambda grid
shares every embedding and product.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.context import BuildContext
from harness.errors import UserError
from harness.parts import Field
from harness.spec import Cell, PartSpec
from harness.stages import Stage

TEXT_BATCH = 256


class ComposedRetrievalPipeline:
    """Composed retrieval: (source image, modification text) queries against a database of images."""

    version = "1"
    fields = {
        "dataset": Field("part", "dataset", required=True),
        "encoder": Field("part", "descriptor", required=True, doc="an image + text encoder (describe_texts)"),
        "composer": Field("part", "composer", required=True),
        "k": Field("int", doc="results kept per query after removing its source (default 50)"),
        "metrics": Field("parts", "metric", required=True),
    }
    roles = ("database", "queries")
    metric_input = "composed_retrieval"

    def build(self, cell: Cell, ctx: BuildContext) -> dict[str, Stage]:
        from harness_plugins.simat.types import ComposedRetrieval

        data = ctx.dataset(cell.dataset)
        dataset = data.dataset
        database = data.items("database")
        assert database is not None
        queries = dataset.items("queries")  # ComposedQueries: (source row, texts) per query
        texts = tuple(dataset.texts())
        k = int(cell.k or 50)
        if k < 1:
            raise UserError(f"k must be >= 1 (got {k})")
        encoder = ctx.create(cell.encoder)
        if not callable(getattr(encoder, "describe_texts", None)):
            raise UserError(f"encoder {cell.encoder.name!r} has no describe_texts: composed retrieval needs an image + text encoder")
        images = ctx.described(database, cell.encoder, "database")
        text_stage = _texts_stage(ctx, cell.encoder, texts)
        prepared = _prepare_stage(ctx, cell.composer, images, text_stage)
        search = _search_stage(ctx, cell.composer, prepared, queries, k, _role_key(dataset, "queries"))
        db_ids = np.asarray(database.ids)

        def retrieval(found: dict[str, np.ndarray]) -> Any:
            return ComposedRetrieval(np.asarray(queries.ids), db_ids, found["indices"], found["scores"],
                                     np.asarray(queries.source, dtype=np.int64))

        table_metric = next((m for m in cell.metrics if callable(getattr(ctx.create(m), "table", None))), None)
        if table_metric is not None:  # the per-query sidecar (query, retrieved id, oracle value, ...)
            metric = ctx.create(table_metric)
            sidecar = ctx.engine.transient("per-query", {"metric": ctx.identity(table_metric)}, [search, data.ground_truth],
                                           lambda v: metric.table(v[1], retrieval(v[0])))
            ctx.table("queries", sidecar, _write_columns)
        return ctx.metrics(cell.metrics, search, data.ground_truth, adapt=retrieval)


def _role_key(dataset: Any, role: str) -> str:
    own = getattr(dataset, "role_fingerprint", None)
    return str(own(role)) if callable(own) else str(dataset.fingerprint())


def _texts_stage(ctx: BuildContext, encoder: PartSpec, texts: tuple[str, ...]) -> Stage:
    def compute(work: Path, _inputs: list[Any]) -> dict[str, Any]:
        enc = ctx.create(encoder)
        rows = []
        with ctx.reporter.task(f"describe texts ({encoder.name})", len(texts)) as advance:
            for start in range(0, len(texts), TEXT_BATCH):
                chunk = list(texts[start : start + TEXT_BATCH])
                rows.append(np.asarray(enc.describe_texts(chunk), dtype=np.float32))
                advance(len(chunk))
        out = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
        if out.ndim != 2 or len(out) != len(texts) or not np.isfinite(out).all():
            raise UserError(f"encoder {encoder.name!r}: describe_texts gave shape {out.shape} (or NaN) for {len(texts)} texts")
        np.save(work / "vectors.npy", out)
        return {"texts": len(texts), "dim": int(out.shape[1]) if out.ndim == 2 else 0}

    digest = hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()
    return ctx.engine.stage("describe:texts", {"texts": digest, "encoder": ctx.identity(encoder)}, [], compute,
                            lambda e, _i: np.load(e / "vectors.npy"))


def _database_identity(ctx: BuildContext, spec: PartSpec) -> dict[str, Any]:
    """The composer's identity restricted to what its database side depends on (``database_params``)."""
    composer = ctx.create(spec)
    keep = tuple(getattr(composer, "database_params", ()))
    ident = ctx.identity(spec)
    return {**ident, "params": {k: v for k, v in ident["params"].items() if k in keep}}


def _prepare_stage(ctx: BuildContext, spec: PartSpec, images: Stage, texts: Stage) -> Stage:
    from harness_plugins.simat.search import gram

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        composer = ctx.create(spec)
        x = np.ascontiguousarray(composer.prepare_images(np.asarray(inputs[0], dtype=np.float32)), dtype=np.float32)
        t = np.ascontiguousarray(composer.prepare_texts(np.asarray(inputs[1], dtype=np.float32)), dtype=np.float32)
        if x.shape[1:] != t.shape[1:]:
            raise UserError(f"composer {spec.name!r}: image dimension {x.shape[1:]} differs from text dimension {t.shape[1:]}")
        np.save(work / "images.npy", x)
        np.save(work / "texts.npy", t)
        np.save(work / "gram.npy", gram(x))  # lambda-free: every cell of a lambda grid reads it
        np.save(work / "text_products.npy", np.ascontiguousarray(t @ x.T))
        return {"images": len(x), "texts": len(t), "dim": int(x.shape[1])}

    def load(entry: Path, _inputs: Any) -> dict[str, np.ndarray]:
        return {n: np.load(entry / f"{n}.npy", mmap_mode="r") for n in ("images", "texts", "gram", "text_products")}

    return ctx.engine.stage("compose:prepare", {"composer": _database_identity(ctx, spec)}, [images, texts], compute, load)


def _search_stage(ctx: BuildContext, spec: PartSpec, prepared: Stage, queries: Any, k: int, queries_key: str) -> Stage:
    from harness_plugins.simat.search import search_ip, search_linear

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        composer = ctx.create(spec)
        p = inputs[0]
        images, texts = np.asarray(p["images"]), np.asarray(p["texts"])
        source = np.asarray(queries.source, dtype=np.int64)
        if callable(getattr(composer, "coefficients", None)):  # linear: never form the query vectors
            composer.check(images, texts, queries)
            indices, scores = search_linear(images, texts, queries, composer.coefficients(), k,
                                            gram_matrix=np.asarray(p["gram"]), text_products=np.asarray(p["text_products"]))
        else:
            indices, scores = search_ip(composer.compose(images, texts, queries), images, k, exclude=source)
        np.savez(work / "neighbors.npz", indices=indices, scores=scores)
        return {"queries": len(indices), "k": k}

    def load(entry: Path, _inputs: Any) -> dict[str, np.ndarray]:
        with np.load(entry / "neighbors.npz", allow_pickle=False) as z:
            return {"indices": z["indices"], "scores": z["scores"]}

    return ctx.engine.stage("search", {"composer": ctx.identity(spec), "k": k, "queries": queries_key}, [prepared],
                            compute, load)


def _write_columns(columns: dict[str, np.ndarray], path: Path) -> None:
    """A per-query table as CSV (header from the column names)."""
    import csv

    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n):
            writer.writerow([_cell(columns[c][i]) for c in names])


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (np.bool_, bool)):
        return int(bool(v))
    return v.item() if hasattr(v, "item") else v
