"""What a pipeline builds its stages with: parts from the run's registry, their identities, datasets and
their items per role, and the stage services every pipeline shares (query transformation chains,
sharded description, metric stages).

A pipeline never touches the cache or the plugin manager directly; everything goes through the
:class:`BuildContext` the core passes to ``Pipeline.build``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.datasets import fingerprint_items
from harness.errors import UserError
from harness.extract import default_workers
from harness.hashing import sha256_json
from harness.parts import Item, ItemList, apply_recorded
from harness.plugins import Part, Registry
from harness.rng import derive_rng
from harness.spec import PartSpec
from harness.stages import SHARD_SIZE, Engine, Stage


@dataclass
class Items:
    """The items of a role as a stage input: ``key`` identifies their content, ``stage`` produces them
    (None: files the dataset serves), ``ids`` are the benchmark's ids in order."""

    key: str
    ids: list[str]
    stage: Stage | None
    _items: list[Item] | None = None

    def inputs(self) -> list[Stage]:
        return [self.stage] if self.stage is not None else []

    def resolve(self, input_values: list[Any]) -> list[Item]:
        """The items, given the loaded values of :meth:`inputs`."""
        return input_values[0] if self.stage is not None else self._items  # type: ignore[return-value]


class DatasetView:
    """A created, prepared dataset: items per role, per-role content keys, ground truth as a stage."""

    def __init__(self, ctx: "BuildContext", ps: PartSpec, dataset: Any) -> None:
        self.ctx, self.spec, self.dataset = ctx, ps, dataset
        self._items: dict[str, Items | None] = {}
        self.fingerprint = str(dataset.fingerprint())
        self.ground_truth = ctx.engine.transient("ground_truth", {"dataset": ctx.identity(ps), "fingerprint": self.fingerprint},
                                                 [], lambda _inputs: dataset.ground_truth())

    def items(self, role: str, *, optional: bool = False) -> Items | None:
        """The role's items (``None`` for a missing optional role); ids must be unique."""
        if role not in self._items:
            try:
                its = list(self.dataset.items(role))
            except KeyError:
                if not optional:
                    raise UserError(f"dataset {self.spec.name!r} has no {role!r} split") from None
                self._items[role] = None
                return None
            ids = [it.id for it in its]
            if len(set(ids)) != len(ids):
                raise UserError(f"dataset {self.spec.name!r}: duplicate item ids in the {role!r} split")
            if not its and not optional:
                raise UserError(f"dataset {self.spec.name!r} has no {role} items")
            ops = getattr(self.dataset, "operations", None)  # optional: what each item went through
            recorded = ops(role) if callable(ops) else None
            if recorded is not None:
                its = ItemList.of(its, [list(recorded.get(i, [])) for i in ids])
            own = getattr(self.dataset, "role_fingerprint", None)
            content = str(own(role)) if callable(own) else fingerprint_items("items", {role: its}, None)
            self._items[role] = Items(sha256_json({"role": role, "content": content}), ids, None, its)
        return self._items[role]

    def info(self) -> dict[str, Any]:
        return {"dataset": self.spec.name, "fingerprint": self.fingerprint,
                "counts": {r: (len(v.ids) if v is not None else None) for r, v in self._items.items()},
                "role_keys": {r: v.key[:16] for r, v in self._items.items() if v is not None}}


class BuildContext:
    """Handed to ``Pipeline.build(cell, ctx)``: one per grid cell, sharing the run's engine and parts."""

    def __init__(self, engine: Engine, registry: Registry, shared: dict[str, Any], *, seed: int,
                 extraction: dict[str, Any]) -> None:
        self.engine = engine
        self.registry = registry
        self.seed = seed
        self.extraction = extraction
        self._shared = shared  # across the cells of a run: created parts, datasets, parts used

    @property
    def reporter(self):
        return self.engine.reporter

    # -- parts ---------------------------------------------------------------------------------------
    def create(self, ps: PartSpec, *, fresh: bool = False) -> Any:
        """The part, created with its nested parts. Shared across cells by identity unless ``fresh``
        (stateful parts that a stage fits or fills: create them inside the stage)."""
        memo = self._shared.setdefault("parts", {})
        key = sha256_json(ps.as_dict() | {"kind": ps.kind})
        if not fresh and key in memo:
            return memo[key]
        params = {k: self._instantiate(v) for k, v in ps.params.items()}
        self._shared.setdefault("used", {})[f"{ps.kind}:{ps.name}"] = self.registry.get(ps.kind, ps.name)
        instance = self.registry.create(ps.kind, ps.name, params)
        try:
            instance.harness_spec = ps.as_dict()
        except (AttributeError, TypeError):  # slots, builtins: the spec is optional information
            pass
        if not fresh:
            memo[key] = instance
        return instance

    def _instantiate(self, value: Any) -> Any:
        if isinstance(value, PartSpec):
            return self.create(value)
        if isinstance(value, list) and any(isinstance(v, PartSpec) for v in value):
            return [self._instantiate(v) for v in value]
        return value

    def identity(self, ps: PartSpec) -> dict[str, Any]:
        """What a part contributes to cache keys: name, params (nested parts by their identity), the
        part's own version and, when it offers one, its content fingerprint (e.g. a checkpoint hash)."""
        part: Part = self.registry.get(ps.kind, ps.name)
        ident: dict[str, Any] = {"kind": ps.kind, "name": ps.name, "version": part.version,
                                 "params": {k: self._identity_of(v) for k, v in ps.params.items()}}
        fp = getattr(self.create(ps), "fingerprint", None)
        if callable(fp) and ps.kind != "dataset":  # a dataset's content enters through its role keys
            ident["fingerprint"] = fp()
        return ident

    def _identity_of(self, value: Any) -> Any:
        if isinstance(value, PartSpec):
            return self.identity(value)
        if isinstance(value, list):
            return [self._identity_of(v) for v in value]
        return value

    # -- datasets ------------------------------------------------------------------------------------
    def dataset(self, ps: PartSpec) -> DatasetView:
        """The dataset, created and prepared once per run (a note in the stage records)."""
        views = self._shared.setdefault("datasets", {})
        key = sha256_json(ps.as_dict())
        if key not in views:
            start = time.perf_counter()
            dataset = self.create(ps)
            prepare = getattr(dataset, "prepare", None)
            if callable(prepare):
                with self.reporter.task(f"dataset {ps.name}", None) as advance:
                    prepare(progress=advance)
            views[key] = view = DatasetView(self, ps, dataset)
            self.engine.note("dataset", view.fingerprint[:16], "checked", time.perf_counter() - start)
        return views[key]

    # -- shared stage services -----------------------------------------------------------------------
    def transformed(self, items: Items, chain: Sequence[PartSpec], *, name: str = "queries") -> Items:
        """Items through a chain of transforms; each prefix is its own stage (cells that share a prefix
        share its images). Randomness per item from (seed, item id, transform name, position)."""
        for position, ps in enumerate(chain):
            items = self._transform_stage(items, ps, position, name)
        return items

    def _transform_stage(self, source: Items, ps: PartSpec, position: int, name: str) -> Items:
        seed = self.seed
        rng_names: Callable[[str], tuple] = (lambda i: (i, ps.name)) if position == 0 else (lambda i: (i, ps.name, position))

        def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
            transform = self.create(ps)
            its = source.resolve(inputs)
            before = getattr(its, "operations", None) or [[] for _ in its]
            records: list[list[dict[str, Any]]] = [[] for _ in its]
            (work / "images").mkdir()

            def one(i: int) -> None:
                it = its[i]
                image, ops = apply_recorded(transform, it.load(), derive_rng(seed, *rng_names(it.id)), ps.name)
                records[i] = [*before[i], *ops]
                # ids may hold '/' (revisitop1m): files go by position; PNG keeps the exact pixels (level 1:
                # 3x faster to write than the default level 6, same pixels)
                image.convert("RGB").save(work / "images" / f"{i:08d}.png", format="PNG", compress_level=1)

            # threads: decoding, encoding and most image operations release the GIL; each item's
            # randomness comes from its own generator, so the order of work never changes a pixel
            with self.reporter.task(f"{name} ({ps.name})", len(its)) as advance, \
                    ThreadPoolExecutor(max(1, self.extraction.get("workers") or default_workers())) as pool:
                for _ in pool.map(one, range(len(its))):
                    advance(1)
            (work / "ids.json").write_text(json.dumps([it.id for it in its]))
            (work / "operations.json").write_text(json.dumps(records, default=str))
            return {"items": len(its)}

        def load(entry: Path, _inputs: Any) -> ItemList:
            ids = json.loads((entry / "ids.json").read_text())
            items = [Item(id_, str(entry / "images" / f"{i:08d}.png")) for i, id_ in enumerate(ids)]
            return ItemList.of(items, json.loads((entry / "operations.json").read_text()))

        config = {"items": source.key if source.stage is None else None, "transform": self.identity(ps), "seed": seed,
                  "position": position, "layout": 2}  # layout 2: operation records beside the images
        stage = self.engine.stage(name, config, source.inputs(), compute, load)
        return Items(stage.key, source.ids, stage)

    def described(self, items: Items, descriptor: PartSpec, role: str) -> Stage:
        """``describe:<role>``: the descriptor over the items, extracted in resumable shards; the value
        is a read-only memory-mapped float32 (n, d) array. Keyed by the descriptor and the items only."""
        from harness.executors import make_executor
        from harness.extract import Describe

        ex = self.extraction

        def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
            part = self.create(descriptor)
            its = items.resolve(inputs)
            return self.engine.sharded_array(
                work, its, Describe(part, batch_size=ex.get("batch_size"), workers=ex.get("workers")),
                label=f"describe {role}", shard_size=ex.get("shard_size", SHARD_SIZE), executor=make_executor(ex))

        config = {"items": items.key if items.stage is None else None, "descriptor": self.identity(descriptor)}
        return self.engine.stage(f"describe:{role}", config, items.inputs(), compute,
                                 lambda e, _i: np.load(e / "vectors.npy", mmap_mode="r"))

    def metrics(self, specs: Sequence[PartSpec], inputs: Stage | Sequence[Stage] | dict[str, tuple[Any, Any]],
                ground_truth: Stage | None, adapt: Callable[..., Any] | None = None,
                reduce: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Stage]:
        """One ``metric:<label>`` stage per metric: ``metric(ground truth, output)`` where output is
        ``adapt(*values of inputs)`` (default: the one input's value). A pipeline whose metrics take
        several input types passes ``{input_type: (stages, adapt)}`` and each metric gets its own.
        ``ground_truth`` None: metrics receive None. The stage's value is the metric's record for the
        result document. A metric with ``breakdown = True`` is also computed per operation family when
        the output offers ``groups()`` and ``subset(mask)`` (and the ground truth, if any,
        ``restrict(query_ids)``): the items of each group scored as a track of their own. ``reduce``
        reshapes each result (e.g. a metric answering per table cell, where the run's cell holds one)."""
        shape = reduce or (lambda r: r)
        by_type = inputs if isinstance(inputs, dict) else None
        out: dict[str, Stage] = {}
        for i, ps in enumerate(specs):
            label = _label(specs, i)
            metric = self.create(ps)
            if by_type is not None:
                stages_in, adapt = by_type[getattr(metric, "input_type", "retrieval")]
                stages = [stages_in] if isinstance(stages_in, Stage) else list(stages_in)
            else:
                stages = [inputs] if isinstance(inputs, Stage) else list(inputs)
            record = {"protocol": str(getattr(metric, "protocol", ps.name)),
                      "version": str(getattr(metric, "version", self.registry.get("metric", ps.name).version)),
                      "params": {k: v for k, v in ps.as_dict().items() if k != "name"}}
            display = getattr(metric, "display", None)
            if isinstance(display, dict) and display:
                record["display"] = {str(k): str(v) for k, v in display.items()}
            main = getattr(metric, "main_metric", None)
            if isinstance(main, str) and main:  # the value leaderboards rank by and reports plot
                record["main"] = main

            def compute(work: Path, values: list[Any], metric: Any = metric, adapt: Any = adapt) -> dict[str, Any]:
                *outputs, gt = values if ground_truth is not None else [*values, None]
                output = adapt(*outputs) if adapt is not None else outputs[0]
                result = {str(k): plain_number(v) for k, v in shape(dict(metric(gt, output))).items()}
                (work / "values.json").write_text(json.dumps(result, indent=1))
                breakdown = _breakdown(lambda *a: shape(dict(metric(*a))), metric, gt, output)
                if breakdown:
                    (work / "breakdown.json").write_text(json.dumps(breakdown, indent=1))
                return {"groups": len(breakdown)} if breakdown else {}

            def load(entry: Path, _inputs: Any, record: dict[str, Any] = record) -> dict[str, Any]:
                loaded = {**record, "values": json.loads((entry / "values.json").read_text())}
                if (entry / "breakdown.json").exists():
                    loaded["breakdown"] = json.loads((entry / "breakdown.json").read_text())
                return loaded

            out[label] = self.engine.stage(f"metric:{label}", {"metric": self.identity(ps), "breakdown": 1},
                                           [*stages, *([ground_truth] if ground_truth is not None else [])], compute, load)
        return out

    def table(self, name: str, stage: Stage, write: Callable[[Any, Path], None], suffix: str = ".csv") -> None:
        """A per-item table of this cell (e.g. detections), written beside the result document by
        ``write(value of stage, path)`` and named in it."""
        self._shared.setdefault("tables", []).append((self.engine.cell, name, stage, write, suffix))

    def tables(self) -> list[tuple[int | None, str, Stage, Callable[[Any, Path], None], str]]:
        return list(self._shared.get("tables", []))

    def parts_used(self) -> dict[str, Part]:
        return dict(self._shared.get("used", {}))

    def datasets(self) -> list[DatasetView]:
        return list(self._shared.get("datasets", {}).values())


def _breakdown(score: Callable[..., dict[str, Any]], metric: Any, gt: Any, output: Any) -> dict[str, dict[str, Any]]:
    """Per operation family: ``score`` (the metric) on the items that went through it."""
    if not getattr(metric, "breakdown", False):
        return {}
    groups, subset = getattr(output, "groups", None), getattr(output, "subset", None)
    restrict = getattr(gt, "restrict", None) if gt is not None else (lambda _ids: None)
    if not (callable(groups) and callable(subset) and callable(restrict)):
        return {}
    out = {}
    for group, mask in groups().items():
        part = subset(mask)
        ids = getattr(part, "query_ids", None)
        out[str(group)] = {str(k): plain_number(v) for k, v in score(restrict(ids), part).items()}
    return out


def _label(specs: Sequence[PartSpec], i: int) -> str:
    """A metric's label: its name, disambiguated by its parameters when a spec lists it twice."""
    ps = specs[i]
    if sum(p.name == ps.name for p in specs) == 1:
        return ps.name
    args = ",".join(f"{k}={v}" for k, v in sorted(ps.as_dict().items()) if k != "name")
    return f"{ps.name}[{args}]" if args else f"{ps.name}#{i}"


def plain_number(v: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN and +-inf to None (strict JSON has neither)."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [plain_number(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain_number(x) for k, x in v.items()}
    return v
