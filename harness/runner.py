"""Runs a validated spec as a chain of cached stages and returns the result document.

Stages: dataset -> queries (optional transform) -> describe (one per role) -> postprocess -> search ->
metrics. Every stage output is stored in the :class:`~harness.cache.Cache` under a key computed from
configs, versions and upstream keys only, so all keys are known before anything runs. Evaluation is
lazy and goes backwards: a cached metric never loads its inputs, and a changed metric recomputes only
itself.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.cache import Cache, make_key
from harness.errors import PluginError, UserError
from harness.extract import extract
from harness.npy import NpyWriter, save_npy
from harness.parts import ROLES, Item, Neighbors, Retrieval
from harness.plugins import Part, Registry
from harness.progress import Reporter
from harness.rng import derive_rng
from harness.spec import PartSpec, Spec

SHARD_SIZE = 2048  # items per cached extraction shard: an interrupted extraction resumes per shard


@dataclass
class StageRecord:
    stage: str
    key: str
    status: str = "pending"  # "computed" | "cached" | "not needed"
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "key": self.key, "status": self.status, "cached": self.status == "cached",
                "seconds": round(self.seconds, 4), **self.detail}


class Run:
    """One execution of a spec. Create parts, compute keys, then evaluate lazily."""

    def __init__(self, spec: Spec, registry: Registry, cache: Cache, reporter: Reporter | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.cache = cache
        self.reporter = reporter or Reporter(quiet=True)
        self.stages: dict[str, StageRecord] = {}
        self._memo: dict[str, Any] = {}
        self._nested: list[float] = []
        self.parts_used: dict[str, Part] = {}
        self.data_info: dict[str, Any] = {}

    # -- parts ------------------------------------------------------------------------------------
    def create(self, ps: PartSpec) -> Any:
        part = self.registry.get(ps.kind, ps.name)
        self.parts_used[f"{ps.kind}:{ps.name}"] = part
        return self.registry.create(ps.kind, ps.name, ps.params)

    def identity(self, ps: PartSpec, instance: Any = None) -> dict[str, Any]:
        """What a part contributes to cache keys: name, params, versions, optional content fingerprint."""
        part = self.registry.get(ps.kind, ps.name)
        ident = {"kind": ps.kind, "name": ps.name, "params": ps.params, "version": part.version,
                 "package": part.package, "package_version": part.package_version}
        fp = getattr(instance, "fingerprint", None)
        if callable(fp):
            ident["fingerprint"] = fp()
        return ident

    # -- stage bookkeeping ---------------------------------------------------------------------------
    def stage(self, name: str, key: str, compute: Callable[[Path], dict[str, Any] | None],
              load: Callable[[Path], Any]) -> Any:
        """Return the stage's value: loaded from the cache, or computed into a new entry and loaded."""
        if name in self._memo:
            return self._memo[name]
        record = self.stages.setdefault(name, StageRecord(name, key))
        start = time.perf_counter()
        self._nested.append(0.0)  # time spent in upstream stages computed on demand from inside this one
        try:
            entry = self.cache.lookup(key)
            if entry is None:
                with self.cache.write(key, {"stage": name}) as work:
                    detail = compute(work) or {}
                entry = self.cache.lookup(key)
                for obsolete in detail.pop("_superseded", []):  # e.g. extraction shards, now in the entry
                    self.cache.remove(obsolete)
                record.status = "computed"
                record.detail.update(detail)
            else:
                record.status = "cached"
            value = load(entry)
        finally:
            elapsed = time.perf_counter() - start
            record.seconds += elapsed - self._nested.pop()
            if self._nested:
                self._nested[-1] += elapsed
        self._memo[name] = value
        return value

    # -- the pipeline --------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        spec = self.spec
        t0 = time.perf_counter()
        # every part is created before any data is touched, so that a factory's own checks (a bad faiss
        # factory string, an unknown timm model) fail fast
        dataset = self.create(spec.dataset)
        descriptor = self.create(spec.descriptor)
        post = [self.create(p) for p in spec.postprocess]
        index = self.create(spec.index)
        metrics = [(self._label(i), p, self.create(p)) for i, p in enumerate(spec.metrics)]
        transform = self.create(spec.transform) if spec.transform else None

        prepare = getattr(dataset, "prepare", None)
        if callable(prepare):
            with self.reporter.task(f"dataset {spec.dataset.name}", None) as advance:
                prepare(progress=advance)
        fingerprint = str(dataset.fingerprint())
        self.stages["dataset"] = StageRecord("dataset", fingerprint[:16], "checked", time.perf_counter() - t0)
        data_ident = {"dataset": self.identity(spec.dataset), "fingerprint": fingerprint}

        items = {role: self._items(dataset, role) for role in ROLES}
        if not items["queries"] or not items["database"]:
            raise UserError(f"dataset {spec.dataset.name!r} has no {'queries' if not items['queries'] else 'database'} items")
        self.data_info = {"dataset": spec.dataset.name, "fingerprint": fingerprint,
                          "counts": {r: (len(v) if v is not None else None) for r, v in items.items()}}

        # keys, from the top down
        queries_key = make_key(stage="queries", data=data_ident, seed=spec.seed,
                               transform=self.identity(spec.transform, transform) if transform else None)
        desc_ident = self.identity(spec.descriptor, descriptor)
        desc_keys = {role: make_key(stage="describe", role=role, items=(queries_key if role == "queries" else data_ident),
                                    descriptor=desc_ident) for role in items}
        needs_train = any(getattr(p, "needs_training", True) for p in post) or bool(getattr(index, "needs_training", False))
        use_train = needs_train and items["train"] is not None
        post_ident = [self.identity(ps, p) for ps, p in zip(spec.postprocess, post)]
        post_key = make_key(stage="postprocess", inputs=[desc_keys[r] for r in ("queries", "database")],
                            train=desc_keys["train"] if use_train else None, steps=post_ident)
        search_key = make_key(stage="search", inputs=post_key, index=self.identity(spec.index, index))

        # lazy getters
        def query_items() -> list[Item]:
            if transform is None:
                return items["queries"]
            return self.stage("queries", queries_key,
                              lambda w: self._make_queries(w, items["queries"], transform, spec.transform.name),
                              lambda e: self._load_query_items(e))

        def described(role: str) -> np.ndarray:
            # the items are asked for only if the descriptors must be computed (query items may be a stage)
            return self.stage(f"describe:{role}", desc_keys[role],
                              lambda w: self._describe(w, role, descriptor,
                                                       query_items() if role == "queries" else items[role],
                                                       desc_keys[role]),
                              lambda e: np.load(e / "vectors.npy", mmap_mode="r"))

        def postprocessed() -> dict[str, np.ndarray]:
            def compute(work: Path) -> dict[str, Any]:
                tr = np.asarray(described("train")) if use_train else None
                for p in post:  # each step is fitted on the training split as the previous steps left it
                    p.fit(tr)
                    tr = p.apply(tr, "train") if tr is not None else None
                if tr is not None:
                    save_npy(work / "train.npy", np.ascontiguousarray(tr, dtype=np.float32))
                dims = {role: _apply_chain(post, described(role), role, work / f"{role}.npy")
                        for role in ("queries", "database")}
                return {"dim": dims["queries"]}

            return self.stage("postprocess", post_key, compute, lambda e: {
                r: np.load(e / f"{r}.npy", mmap_mode="r") for r in ("queries", "database", "train") if (e / f"{r}.npy").exists()})

        def searched() -> Neighbors:
            def compute(work: Path) -> dict[str, Any]:
                arrays = postprocessed()
                if getattr(index, "needs_training", False):
                    if "train" not in arrays:
                        raise UserError(f"index {spec.index.name!r} needs training data but the dataset has no train split")
                    index.train(np.asarray(arrays["train"]))
                index.add(np.asarray(arrays["database"]))
                queries = np.asarray(arrays["queries"])
                if "progress" in inspect.signature(index.search).parameters:  # optional richer form
                    with self.reporter.task("search (database rows)", len(arrays["database"])) as advance:
                        nb = index.search(queries, progress=advance)
                else:
                    nb = index.search(queries)
                if not isinstance(nb, Neighbors):
                    raise PluginError(f"index {spec.index.name!r} returned {type(nb).__name__}, expected harness.parts.Neighbors")
                np.savez(work / "neighbors.npz", **nb.arrays())
                q, _, _ = nb.as_pairs()
                return {"form": nb.form, "n_results": int(len(q))}

            def load(e: Path) -> Neighbors:
                with np.load(e / "neighbors.npz", allow_pickle=False) as z:
                    return Neighbors(**{k: z[k] for k in z.files})

            return self.stage("search", search_key, compute, load)

        results: dict[str, Any] = {}
        shared: dict[str, Any] = {}  # built once, only if some metric has to be computed

        def ground_truth() -> Any:
            if "gt" not in shared:
                shared["gt"] = dataset.ground_truth()
            return shared["gt"]

        def retrieval() -> Retrieval:
            if "retrieval" not in shared:
                shared["retrieval"] = Retrieval(np.asarray(self._ids(query_items())),
                                                np.asarray(self._ids(items["database"])), searched())
            return shared["retrieval"]

        for label, ps, metric in metrics:
            key = make_key(stage="metric", search=search_key, metric=self.identity(ps, metric), queries=queries_key)

            def compute(work: Path, metric=metric) -> dict[str, Any]:
                values = metric(ground_truth(), retrieval())
                values = {str(k): _plain_number(v) for k, v in dict(values).items()}
                (work / "values.json").write_text(json.dumps(values, indent=1))
                return {}

            values = self.stage(f"metric:{label}", key, compute, lambda e: json.loads((e / "values.json").read_text()))
            results[label] = {"protocol": str(getattr(metric, "protocol", ps.name)),
                              "version": str(getattr(metric, "version", self.registry.get("metric", ps.name).version)),
                              "params": ps.params, "values": values}

        # stages that downstream caching made unnecessary
        for name, key in [("queries", queries_key if transform else None), *[(f"describe:{r}", desc_keys[r]) for r in items if items[r] is not None],
                          ("postprocess", post_key), ("search", search_key)]:
            if key is None or name in self.stages:
                continue
            if name == "describe:train" and not use_train:
                continue
            self.stages[name] = StageRecord(name, key, "cached" if self.cache.lookup(key) else "not needed")
        return results

    def ordered_stages(self) -> list[StageRecord]:
        """Stage records in pipeline order (evaluation order is backwards and on demand)."""
        order = ["dataset", "queries", "describe:queries", "describe:database", "describe:train", "postprocess", "search"]
        rank = {n: i for i, n in enumerate(order)}
        return sorted(self.stages.values(), key=lambda r: rank.get(r.stage, len(order)))

    # -- helpers -------------------------------------------------------------------------------------
    def _label(self, i: int) -> str:
        ps = self.spec.metrics[i]
        same = [p for p in self.spec.metrics if p.name == ps.name]
        if len(same) == 1:
            return ps.name
        args = ",".join(f"{k}={v}" for k, v in sorted(ps.params.items()))
        return f"{ps.name}[{args}]" if args else f"{ps.name}#{i}"

    @staticmethod
    def _ids(items: list[Item]) -> list[str]:
        return [it.id for it in items]

    def _items(self, dataset: Any, role: str) -> list[Item] | None:
        try:
            its = list(dataset.items(role))
        except KeyError:
            if role == "train":
                return None
            raise UserError(f"dataset {self.spec.dataset.name!r} has no {role!r} split") from None
        ids = [it.id for it in its]
        if len(set(ids)) != len(ids):
            raise UserError(f"dataset {self.spec.dataset.name!r}: duplicate item ids in the {role!r} split")
        return its

    def _make_queries(self, work: Path, items: list[Item], transform: Any, name: str) -> dict[str, Any]:
        (work / "images").mkdir()
        manifest = []
        with self.reporter.task(f"queries ({name})", len(items)) as advance:
            for i, it in enumerate(items):
                image = transform(it.load(), derive_rng(self.spec.seed, it.id, name))
                path = work / "images" / f"{i:08d}.png"  # ids may hold '/' (revisitop1m): files go by position
                image.convert("RGB").save(path, format="PNG")  # lossless: the exact pixels are the query
                manifest.append(it.id)
                advance(1)
        (work / "ids.json").write_text(json.dumps(manifest))
        return {"items": len(items)}

    @staticmethod
    def _load_query_items(entry: Path) -> list[Item]:
        ids = json.loads((entry / "ids.json").read_text())
        return [Item(id_, str(entry / "images" / f"{i:08d}.png")) for i, id_ in enumerate(ids)]

    def _describe(self, work: Path, role: str, descriptor: Any, items: list[Item], key: str) -> dict[str, Any]:
        """Extract in shards, each its own cache entry, so an interrupted extraction resumes."""
        ex = self.spec.extraction
        shards, shard_keys, reused = [], [], 0
        shard_size = ex.get("shard_size", SHARD_SIZE)
        with self.reporter.task(f"describe {role}", len(items)) as advance:
            for start in range(0, len(items), shard_size):
                chunk = items[start : start + shard_size]
                shard_key = make_key(stage="describe-shard", parent=key, start=start, ids=[it.id for it in chunk])
                shard_keys.append(shard_key)
                # a concurrent run that finishes this stage first removes the shards it superseded:
                # a shard may vanish between lookup and load (a mapped one stays readable)
                shard = _load_shard(self.cache.lookup(shard_key))
                if shard is None:
                    with self.cache.write(shard_key, {"stage": f"describe:{role}:shard"}) as w:
                        vec = extract(descriptor, chunk, batch_size=ex.get("batch_size", 32),
                                      workers=ex.get("workers"), progress=advance)
                        save_npy(w / "vectors.npy", vec)
                    shard = _load_shard(self.cache.lookup(shard_key))
                    shard = vec if shard is None else shard
                else:
                    reused += 1
                    advance(len(chunk))
                shards.append(shard)
        dims = {s.shape[1] for s in shards}
        if len(dims) > 1:
            raise PluginError(f"descriptor {self.spec.descriptor.name!r} returned different dimensions: {sorted(dims)}")
        with NpyWriter(work / "vectors.npy", (len(items), dims.pop() if dims else 0)) as out:  # no mmap: no SIGBUS
            for s in shards:
                out.write(s)
        return {"items": len(items), "shards": len(shards), "shards_reused": reused, "_superseded": shard_keys}


def _load_shard(entry: Path | None) -> np.ndarray | None:
    """A cached shard's vectors (memory-mapped), or None if the entry is absent or was just removed."""
    if entry is None:
        return None
    try:
        return np.load(entry / "vectors.npy", mmap_mode="r")
    except FileNotFoundError:
        return None


#: Rows per block when every post-processing step is row-wise: bounds memory at database scale.
POSTPROCESS_BLOCK = 65536


def _apply_chain(steps: list[Any], x: np.ndarray, role: str, out_path: Path) -> int:
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


def _plain_number(v: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN and +-inf to None (strict JSON has neither)."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain_number(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain_number(x) for k, x in v.items()}
    return v


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
        metrics = run.execute()
    finally:
        cache.close()
    doc = build_document(spec=spec, overrides=list(overrides), parts=run.parts_used, data=run.data_info,
                         stages=[r.as_dict() for r in run.ordered_stages()], metrics=metrics,
                         started=started, duration=time.perf_counter() - t0)
    path = write_document(doc, output_dir) if output_dir is not None else None
    return doc, path
