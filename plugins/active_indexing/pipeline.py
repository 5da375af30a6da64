"""The active-indexing pipeline (protocols.md §5): retrieval of attacked copies through a compressed index.

dataset -> originals (the references the ground truth pairs with a query) -> describe:database,
describe:train -> postprocess:fit -> postprocess:database -> index (trained on train, filled with the
whole database, in memory) -> [activate: the originals optimised towards their own quantised
reconstruction] -> queries (the originals, activated or not, through the cell's attack) ->
describe:queries -> postprocess:queries -> search -> metric:<label>, and per group of cells a summary.

The index holds the codes of the *passive* database descriptors, as in the reference: activation
changes the published images, not what was indexed, so that copies of an activated image land nearer
its code. Everything on the database side is shared by every cell (passive and active, every attack):
only the activation (once per activation setting) and the queries are per cell.

Summary: one record per group of cells that differ only in ``transform`` (e.g. passive and active
are two groups), the mean of the cells' values (``summary.values``) over the cells whose chain uses no
transform of ``summary.exclude`` (default: the screenshot attack, as the paper's Table-1 average). It
is a transient stage shared by the group's cells, evaluated after every cell has been built (the core
builds every cell before evaluating anything): it reads the group's metric records then.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from harness.context import BuildContext, Items
from harness.errors import UserError
from harness.hashing import sha256_json
from harness.parts import Field, Item, ItemList, Retrieval
from harness.rng import derive_rng
from harness.spec import Cell
from harness.stages import Stage
from harness_plugins.retrieval.pipeline import apply_stage, fit_stage, index_stage, search_stage

from . import activation as act
from .metrics import summarize

SUMMARY_DEFAULTS = {"exclude": ["attack.screenshot"], "values": ["recall_at_1", "recall_at_10", "mrr", "micro_ap"]}


def check_summary(value: Any) -> Iterable[tuple[tuple, str, str | None]]:
    if not isinstance(value, dict):
        yield (), f"expected a mapping {{exclude: [transform names], values: [value names]}}, got {type(value).__name__}", None
        return
    for key, v in value.items():
        if key not in SUMMARY_DEFAULTS:
            close = difflib.get_close_matches(str(key), list(SUMMARY_DEFAULTS), n=1, cutoff=0.6)
            yield (key,), "unknown summary option (known: exclude, values)", close[0] if close else None
        elif not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            yield (key,), f"expected a list of names, got {v!r}", None


def check_originals(value: Any) -> Iterable[tuple[tuple, str, str | None]]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        yield (), f"expected a positive integer (the first N originals), got {value!r}", None


class ActiveIndexingPipeline:
    """Attacked copies of database images searched in a compressed index, passive or activated (active indexing)."""

    version = "1"
    fields = {
        "dataset": Field("part", "dataset", required=True, doc="a DISC21-like dataset: references, train, and a ground truth"),
        "transform": Field("chain", "transform", doc="the attack (or chain) applied to the originals to make the queries"),
        "descriptor": Field("part", "descriptor", required=True, doc="differentiable (timm / torchscript) when activating"),
        "postprocess": Field("parts", "postprocessor", doc="fitted on the train split; differentiable steps when activating"),
        "index": Field("part", "index", required=True, doc="e.g. {name: faiss, factory: IVF4096,PQ8x8, nprobe: 1, search: {k: 100}}"),
        "activation": Field("mapping", doc="{name: none} (passive, also when absent) or {name: jnd, steps, lr, image_weight, "
                            "scaling, batch_size}", check=act.check),
        "originals": Field("int", doc="use the first N originals only (database order)", check=check_originals),
        "summary": Field("mapping", doc="{exclude: [transform names], values: [value names]}: the per-group mean row",
                         check=check_summary),
        "metrics": Field("parts", "metric", required=True),
    }
    roles = ("database", "train")
    metric_input = "retrieval"

    def __init__(self) -> None:
        # group key -> [(cell number, transform names, metric stages)], filled while the cells are built
        self._groups: dict[str, list[tuple[int, list[str], dict[str, Stage]]]] = {}

    def build(self, cell: Cell, ctx: BuildContext) -> dict[str, Stage]:
        activation = act.parse(cell.activation)
        data = ctx.dataset(cell.dataset)
        database = data.items("database")
        train = data.items("train", optional=True)
        assert database is not None
        originals, positions = _originals(ctx, data, database, cell.originals)

        steps = [ctx.create(p) for p in cell.postprocess]
        index = ctx.create(cell.index)
        index_trains = bool(getattr(index, "needs_training", False))
        use_train = (any(getattr(p, "needs_training", True) for p in steps) or index_trains) and train is not None
        if activation.active:
            act.require_differentiable(ctx.create(cell.descriptor), cell.descriptor.name)
            act.differentiable_steps(steps, [p.name for p in cell.postprocess])
            if not callable(getattr(index, "quantize", None)):
                raise UserError(f"activation needs an index that decodes its codes (quantize); {cell.index.name!r} has none")

        db_described = ctx.described(database, cell.descriptor, "database")
        train_described = ctx.described(train, cell.descriptor, "train") if use_train else None
        fit = fit_stage(ctx, cell.postprocess, train_described) if cell.postprocess else None
        db_vectors = apply_stage(ctx, fit, db_described, "database") if fit is not None else db_described
        train_vectors = (fit if fit is not None and use_train else train_described) if index_trains else None
        index_st = index_stage(ctx, cell.index, db_vectors, train_vectors)

        source = originals
        if activation.active:
            source = _activation_stage(ctx, cell, activation, originals, positions, index_st, db_vectors, fit)
        queries = ctx.transformed(source, cell.transform) if cell.transform else source
        q_described = ctx.described(queries, cell.descriptor, "queries")
        q_vectors = apply_stage(ctx, fit, q_described, "queries") if fit is not None else q_described
        search = search_stage(ctx, cell.index, index_st, q_vectors)

        ids = np.asarray(originals.ids)
        gt = ctx.engine.transient("ground_truth:originals", {"originals": originals.key}, [],
                                  lambda _inputs: _self_ground_truth(ids))
        db_ids = np.asarray(database.ids)

        def adapt(neighbors: Any, items: Any = None) -> Retrieval:
            ops = getattr(items, "operations", None) if items is not None else None
            return Retrieval(ids, db_ids, neighbors, ops)

        inputs = [search] + ([queries.stage] if queries.stage is not None else [])
        stages = ctx.metrics(cell.metrics, inputs, gt, adapt=adapt)
        summary = self._summary(ctx, cell, stages)
        return {**stages, **({"summary": summary} if summary is not None else {})}

    # -- summary over a group of cells -----------------------------------------------------------------
    def _summary(self, ctx: BuildContext, cell: Cell, stages: dict[str, Stage]) -> Stage | None:
        options = {**SUMMARY_DEFAULTS, **(cell.summary or {})}
        if not options["values"]:
            return None
        group = sha256_json({k: v for k, v in cell.data.items() if k != "transform"})
        names = [p.name for p in cell.transform]
        members = self._groups.setdefault(group, [])
        members.append((cell.number, names, stages))
        # the descriptor's weights, said in every cell (e.g. "random-init-seed0:timm=...": a random network)
        fingerprint = getattr(ctx.create(cell.descriptor), "fingerprint", None)
        record = {"protocol": "active-indexing-summary", "version": self.version,
                  "params": {"exclude": list(options["exclude"]), "values": list(options["values"]),
                             "descriptor": {"name": cell.descriptor.name,
                                            "weights": str(fingerprint()) if callable(fingerprint) else None}},
                  "display": {"n_*": "integer"}}

        def make(_inputs: list[Any]) -> dict[str, Any]:
            included = [m for _, used, m in members if not set(used) & set(options["exclude"])]
            records = [{label: ctx.engine.value(s) for label, s in m.items()} for m in included]
            cells = [n for n, used, _ in members if not set(used) & set(options["exclude"])]
            return {**record, "params": {**record["params"], "cells": cells},
                    "values": summarize(records, options["values"])}

        return ctx.engine.transient("summary", {"group": group, "options": options}, [], make)


def _originals(ctx: BuildContext, data: Any, database: Items, limit: int | None) -> tuple[Items, list[int]]:
    """The references the ground truth pairs with a query, in database order (the first ``limit``), as
    items served from the dataset's files; and their rows in the database."""
    gt = ctx.engine.value(data.ground_truth)  # loaded once per run, shared by every cell
    refs = getattr(gt, "pair_reference_ids", None)
    if refs is None:
        raise UserError(f"dataset {data.spec.name!r}: active indexing needs a ground truth that pairs queries with "
                        "references (disc21, demo)")
    wanted = set(np.asarray(refs, dtype=str).tolist())
    all_items = database.resolve([])
    positions = [i for i, it in enumerate(all_items) if it.id in wanted][:limit]
    if not positions:
        raise UserError(f"dataset {data.spec.name!r}: no reference of the database is paired with a query")
    chosen = ItemList.of([all_items[i] for i in positions])
    ids = [it.id for it in chosen]
    key = sha256_json({"role": "originals", "database": database.key, "ids": ids})
    return Items(key, ids, None, chosen), positions


def _self_ground_truth(ids: np.ndarray) -> Any:
    from harness_plugins.disc21.groundtruth import Disc21GroundTruth

    return Disc21GroundTruth(ids, ids, ids)


def _activation_stage(ctx: BuildContext, cell: Cell, activation: act.Activation, originals: Items, positions: list[int],
                      index: Stage, db_vectors: Stage, fit: Stage | None) -> Items:
    """``activate``: the originals optimised towards the quantisation of their own indexed vectors."""
    seed = ctx.seed
    rows = np.asarray(positions, dtype=np.int64)

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        index_value, vectors = inputs[0], inputs[1]
        steps = inputs[2].steps if fit is not None else []
        targets = index_value.quantize(np.asarray(vectors[rows]))
        descriptor = ctx.create(cell.descriptor)
        its = originals.resolve([])
        (work / "images").mkdir()

        def write(i: int, image: Any) -> None:
            image.save(work / "images" / f"{i:08d}.png", format="PNG", compress_level=1)

        with ctx.reporter.task(f"activate ({activation.steps} steps)", len(its)) as advance:
            result = act.activate_all(its, targets, descriptor, steps, activation,
                                      lambda it: derive_rng(seed, it.id, "activation"), write, advance)
        (work / "ids.json").write_text(json.dumps([it.id for it in its]))
        (work / "activation.json").write_text(json.dumps(result["per_image"]))
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in result["summary"].items()}

    def load(entry: Path, _inputs: Any) -> ItemList:
        ids = json.loads((entry / "ids.json").read_text())
        return ItemList.of([Item(i, str(entry / "images" / f"{n:08d}.png")) for n, i in enumerate(ids)])

    config = {"originals": originals.key, "activation": activation.as_dict(), "descriptor": ctx.identity(cell.descriptor),
              "seed": seed, "layout": 1}
    stage = ctx.engine.stage("activate", config, [index, db_vectors] + ([fit] if fit is not None else []), compute, load)
    return Items(stage.key, originals.ids, stage)
