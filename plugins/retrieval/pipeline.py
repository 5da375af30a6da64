"""The retrieval pipeline, written once:

dataset -> queries (optional transform chain, one stage per prefix) -> describe:<role> (queries,
database, train) -> postprocess:fit (on train) -> postprocess:<role> (queries, database) -> index
(train + add, in memory) -> search -> metric:<label>.

Every key is known before anything runs; the database side (describe, post-process, index) does not
depend on the queries, so grid cells that vary the queries share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.context import BuildContext, Items
from harness.errors import PluginError, UserError
from harness.npy import NpyWriter, save_npy
from harness.parts import Field, Neighbors, Retrieval
from harness.spec import Cell, PartSpec
from harness.stages import Stage

#: Rows per block when every post-processing step is row-wise: bounds memory at database scale.
POSTPROCESS_BLOCK = 65536


class RetrievalPipeline:
    """Queries against a database: describe, post-process, index, search, score (DISC21, revisitop)."""

    version = "1"
    fields = {
        "dataset": Field("part", "dataset", required=True),
        "transform": Field("chain", "transform", doc="query generation: a transform or a chain, applied to every query"),
        "descriptor": Field("part", "descriptor", required=True),
        "postprocess": Field("parts", "postprocessor", doc="fitted on the train split, applied per role"),
        "index": Field("part", "index", required=True),
        "metrics": Field("parts", "metric", required=True),
    }
    roles = ("queries", "database", "train")
    metric_input = "retrieval"

    def build(self, cell: Cell, ctx: BuildContext) -> dict[str, Stage]:
        data = ctx.dataset(cell.dataset)
        queries, database = data.items("queries"), data.items("database")
        train = data.items("train", optional=True)
        assert queries is not None and database is not None
        if cell.transform:
            queries = ctx.transformed(queries, cell.transform)

        # probes: the parts' declared needs decide the graph (fitted copies are made inside the stages)
        steps = [ctx.create(p) for p in cell.postprocess]
        index = ctx.create(cell.index)
        index_trains = bool(getattr(index, "needs_training", False))
        needs_train = any(getattr(p, "needs_training", True) for p in steps) or index_trains
        use_train = needs_train and train is not None

        described = {"queries": ctx.described(queries, cell.descriptor, "queries"),
                     "database": ctx.described(database, cell.descriptor, "database")}
        train_stage = ctx.described(train, cell.descriptor, "train") if use_train else None
        if cell.postprocess:
            fit = fit_stage(ctx, cell.postprocess, train_stage)
            vectors = {role: apply_stage(ctx, fit, described[role], role) for role in ("queries", "database")}
            train_vectors = fit if use_train else None
        else:
            vectors, train_vectors = described, train_stage
        search = _search_stage(ctx, cell.index, vectors, train_vectors if index_trains else None)
        query_ids, db_ids = np.asarray(queries.ids), np.asarray(database.ids)
        if queries.stage is None:  # the dataset's own records, if it has any
            operations = getattr(queries.resolve([]), "operations", None)
            return ctx.metrics(cell.metrics, search, data.ground_truth,
                               adapt=lambda neighbors: Retrieval(query_ids, db_ids, neighbors, operations))
        return ctx.metrics(cell.metrics, [search, queries.stage], data.ground_truth,
                           adapt=lambda neighbors, items: Retrieval(query_ids, db_ids, neighbors, items.operations))


class FittedSteps:
    """The fitted post-processing chain and the post-processed training descriptors (or None)."""

    def __init__(self, steps: list[Any], train: np.ndarray | None) -> None:
        self.steps, self.train = steps, train


def _train_array(value: Any) -> np.ndarray | None:
    """Training vectors from a stage value: a describe:train array or a fit stage's output."""
    if isinstance(value, FittedSteps):
        return value.train
    return None if value is None else np.asarray(value)


def fit_stage(ctx: BuildContext, specs: list[PartSpec], train: Stage | None) -> Stage:
    """``postprocess:fit``: each step fitted on the train split as the previous steps left it."""

    def fit(train_vectors: np.ndarray | None) -> FittedSteps:
        steps = [ctx.create(p, fresh=True) for p in specs]
        tr = train_vectors
        for step in steps:
            step.fit(tr)
            tr = step.apply(tr, "train") if tr is not None else None
        return FittedSteps(steps, tr)

    fitted_here: dict[str, FittedSteps] = {}

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        result = fit(np.asarray(inputs[0]) if inputs else None)
        if result.train is not None:
            save_npy(work / "train.npy", np.ascontiguousarray(result.train, dtype=np.float32))
        states = [s.state() if callable(getattr(s, "state", None)) else None for s in result.steps]
        for i, state in enumerate(states):
            if state is not None:
                np.savez(work / f"state{i}.npz", **{k: np.asarray(v) for k, v in state.items() if v is not None})
        fitted_here["value"] = result
        return {"steps": len(result.steps), "train": None if result.train is None else len(result.train)}

    def load(entry: Path, get_inputs: Any) -> FittedSteps:
        if "value" in fitted_here:
            return fitted_here["value"]
        train_vectors = np.load(entry / "train.npy", mmap_mode="r") if (entry / "train.npy").exists() else None
        steps = [ctx.create(p, fresh=True) for p in specs]
        if all(callable(getattr(s, "load_state", None)) and (entry / f"state{i}.npz").exists() for i, s in enumerate(steps)):
            for i, step in enumerate(steps):
                with np.load(entry / f"state{i}.npz", allow_pickle=False) as z:
                    step.load_state({k: z[k] for k in z.files})
            return FittedSteps(steps, train_vectors)
        inputs = get_inputs()  # a step without state(): fit again from the training descriptors
        return FittedSteps(fit(np.asarray(inputs[0]) if inputs else None).steps, train_vectors)

    config = {"steps": [ctx.identity(p) for p in specs], "trained": train is not None}
    return ctx.engine.stage("postprocess:fit", config, [train] if train is not None else [], compute, load)


def apply_stage(ctx: BuildContext, fit: Stage, described: Stage, role: str) -> Stage:
    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        fitted, x = inputs
        return {"dim": apply_chain(fitted.steps, x, role, work / "vectors.npy")}

    return ctx.engine.stage(f"postprocess:{role}", {"role": role}, [fit, described], compute,
                            lambda e, _i: np.load(e / "vectors.npy", mmap_mode="r"))


def _search_stage(ctx: BuildContext, index_spec: PartSpec, vectors: dict[str, Stage], train: Stage | None) -> Stage:
    """``index`` (train + add, kept in memory for every cell that searches it) then ``search``."""
    return search_stage(ctx, index_spec, index_stage(ctx, index_spec, vectors["database"], train), vectors["queries"])


def index_stage(ctx: BuildContext, index_spec: PartSpec, database: Stage, train: Stage | None) -> Stage:
    """``index``: a fresh index trained on ``train`` (a describe:train or postprocess:fit stage, or None)
    and filled with ``database``; transient (in memory), built once per run for every stage that uses it."""

    def build_index(inputs: list[Any]) -> Any:
        index = ctx.create(index_spec, fresh=True)
        if train is not None:
            tr = _train_array(inputs[1])
            if tr is None:
                raise UserError(f"index {index_spec.name!r} needs training data but the dataset has no train split")
            index.train(np.asarray(tr))
        index.add(np.asarray(inputs[0]))
        return index

    if getattr(ctx.create(index_spec), "needs_training", False) and train is None:
        raise UserError(f"index {index_spec.name!r} needs training data but the dataset has no train split")
    return ctx.engine.transient("index", {"index": ctx.identity(index_spec)},
                                [database] + ([train] if train is not None else []), build_index)


def search_stage(ctx: BuildContext, index_spec: PartSpec, index: Stage, queries: Stage) -> Stage:
    """``search``: the queries' vectors against a built index stage; the value is :class:`Neighbors`."""

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        index, queries = inputs[0], np.asarray(inputs[1])
        if "progress" in _parameters(index.search):  # optional richer form
            with ctx.reporter.task("search (database rows)", index_rows(index)) as advance:
                nb = index.search(queries, progress=advance)
        else:
            nb = index.search(queries)
        if not isinstance(nb, Neighbors):
            raise PluginError(f"index {index_spec.name!r} returned {type(nb).__name__}, expected harness.parts.Neighbors")
        np.savez(work / "neighbors.npz", **nb.arrays())
        q, _, _ = nb.as_pairs()
        return {"form": nb.form, "n_results": int(len(q))}

    def load(entry: Path, _inputs: Any) -> Neighbors:
        with np.load(entry / "neighbors.npz", allow_pickle=False) as z:
            return Neighbors(**{k: z[k] for k in z.files})

    return ctx.engine.stage("search", {"index": ctx.identity(index_spec)}, [index, queries], compute, load)


def _parameters(fn: Any) -> set[str]:
    import inspect

    return set(inspect.signature(fn).parameters)


def index_rows(index: Any) -> int | None:
    n = getattr(index, "ntotal", None)
    return int(n) if isinstance(n, (int, np.integer)) else None


def apply_chain(steps: list[Any], x: np.ndarray, role: str, out_path: Path) -> int:
    """Apply fitted steps to ``x`` and save float32 rows to ``out_path``; returns the output dimension.

    Steps that declare ``rowwise = True`` (each output row depends only on its input row) are applied
    block by block from the memory-mapped input into the output file, so a 1M x 2048 database
    never sits in memory whole; any other step gets the whole array.
    """
    if not all(getattr(p, "rowwise", False) for p in steps) or len(x) <= POSTPROCESS_BLOCK:
        y = np.asarray(x)
        for p in steps:
            y = p.apply(y, role)
        save_npy(out_path, np.ascontiguousarray(y, dtype=np.float32))
        return int(y.shape[1])
    out: NpyWriter | None = None
    try:
        for start in range(0, len(x), POSTPROCESS_BLOCK):
            y = np.asarray(x[start : start + POSTPROCESS_BLOCK])
            for p in steps:
                y = p.apply(y, role)
            if out is None:  # ordinary writes, not a memory map: a full disk is an error, not a SIGBUS
                out = NpyWriter(out_path, (len(x), y.shape[1]))
            out.write(y)
        out.close()
    finally:
        if out is not None:
            out.abort()  # a no-op once closed
    return out.shape[1]
