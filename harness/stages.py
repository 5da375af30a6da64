"""The stage engine: a graph of content-keyed stages, evaluated lazily and backwards.

A :class:`Stage` has a name (shown), a key (a hash of its config, the identities of its parts and its
inputs' keys), inputs (other stages), ``compute`` and ``load``. The same key is the same stage: adding
it twice returns the first, so grid cells that need the same work share it, and it is computed at most
once per run. A stage is evaluated only when something downstream asks for its value; a cached stage
loads from its entry without touching its inputs. Transient stages (``cached=False``) hold in-memory
values that are not worth storing (a built index, a loaded ground truth): computed once per run, on
demand.

The engine also offers :meth:`Engine.sharded_array`, the resumable, sharded computation of a large
array (descriptor extraction), so that any pipeline gets resumption after a kill for free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.cache import Cache, make_key
from harness.errors import PluginError
from harness.executors import Executor, LocalExecutor, Shard, ShardFn, publish_shard
from harness.npy import NpyWriter
from harness.progress import Reporter

#: compute(work_dir, input_values) -> details for the stage record (JSON-able) or None.
Compute = Callable[[Path, list[Any]], "dict[str, Any] | None"]
#: load(entry_dir, get_inputs) -> value; ``get_inputs()`` loads the inputs, for the rare load that needs them.
Load = Callable[[Path, Callable[[], list[Any]]], Any]
#: make(input_values) -> value, for transient stages.
Make = Callable[[list[Any]], Any]

SHARD_SIZE = 2048  # items per cached shard of a sharded array: an interrupted computation resumes per shard


@dataclass(eq=False)
class Stage:
    name: str
    key: str
    inputs: tuple["Stage", ...]
    compute: Compute | None = None
    load: Load | None = None
    make: Make | None = None  # transient stages only
    cells: set[int] = field(default_factory=set)

    @property
    def cached(self) -> bool:
        return self.make is None


@dataclass
class StageRecord:
    stage: str
    key: str
    status: str = "not needed"  # "computed" | "cached" | "not needed" | "checked"
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    cells: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {"stage": self.stage, "key": self.key, "status": self.status, "seconds": round(self.seconds, 4)}
        if self.cells:
            out["cells"] = self.cells
        if self.details:
            out["details"] = self.details
        return out


class Engine:
    """Holds the graph of one run, the cache it reads and writes, and the stage records."""

    def __init__(self, cache: Cache, reporter: Reporter | None = None) -> None:
        self.cache = cache
        self.reporter = reporter or Reporter(quiet=True)
        self._stages: dict[str, Stage] = {}  # key -> stage, in insertion (= topological) order
        self._values: dict[str, Any] = {}
        self._records: dict[str, StageRecord] = {}
        self._notes: list[StageRecord] = []  # records of work done outside stages (dataset checks)
        self._names: dict[str, int] = {}
        self._display: dict[str, str] = {}
        self._nested: list[float] = []
        self._superseded: list[list[str]] = []
        self._computing: list[tuple[str, str]] = []  # (name, key) of the stages being computed, innermost last
        self.cell: int | None = None  # the grid cell currently being built (for the records)

    # -- building ------------------------------------------------------------------------------------
    def stage(self, name: str, config: dict[str, Any], inputs: Sequence[Stage], compute: Compute, load: Load) -> Stage:
        """A cached stage; its key hashes ``name``, ``config`` and the inputs' keys."""
        return self._add(Stage(name, self._key(name, config, inputs), tuple(inputs), compute=compute, load=load))

    def transient(self, name: str, config: dict[str, Any], inputs: Sequence[Stage], make: Make) -> Stage:
        """An in-memory stage: computed at most once per run, when something needs it; never stored."""
        return self._add(Stage(name, self._key(name, config, inputs), tuple(inputs), make=make))

    @staticmethod
    def _key(name: str, config: dict[str, Any], inputs: Sequence[Stage]) -> str:
        return make_key(stage=name.split(":", 1)[0], config=config, inputs=[s.key for s in inputs])

    def _add(self, stage: Stage) -> Stage:
        existing = self._stages.get(stage.key)
        if existing is not None:
            stage = existing
        else:
            self._stages[stage.key] = stage
            n = self._names.get(stage.name, 0) + 1
            self._names[stage.name] = n
            self._display[stage.key] = stage.name if n == 1 else f"{stage.name}#{n}"
        if self.cell is not None:
            self._mark(stage, self.cell)
        return stage

    def _mark(self, stage: Stage, cell: int) -> None:
        if cell in stage.cells:
            return
        stage.cells.add(cell)
        for s in stage.inputs:
            self._mark(s, cell)

    def note(self, name: str, key: str, status: str, seconds: float, details: dict[str, Any] | None = None) -> None:
        """Record work done while building (checking a dataset), shown with the stages."""
        self._notes.append(StageRecord(name, key, status, seconds, details or {}))

    # -- evaluation ----------------------------------------------------------------------------------
    def value(self, stage: Stage) -> Any:
        """The stage's value: memoised, loaded from the cache, or computed (inputs first) and stored."""
        if stage.key in self._values:
            return self._values[stage.key]
        record = self._records.setdefault(stage.key, StageRecord(self._display[stage.key], stage.key))
        start = time.perf_counter()
        self._nested.append(0.0)  # time spent in upstream stages evaluated from inside this one
        try:
            value = self._transient(stage, record) if not stage.cached else self._cached(stage, record)
        finally:
            elapsed = time.perf_counter() - start
            record.seconds += elapsed - self._nested.pop()
            if self._nested:
                self._nested[-1] += elapsed
        self._values[stage.key] = value
        return value

    def _inputs(self, stage: Stage) -> list[Any]:
        return [self.value(s) for s in stage.inputs]

    def _transient(self, stage: Stage, record: StageRecord) -> Any:
        value = stage.make(self._inputs(stage))  # type: ignore[misc]
        record.status = "computed"
        return value

    def _cached(self, stage: Stage, record: StageRecord) -> Any:
        entry = self.cache.lookup(stage.key)
        if entry is None:
            self._superseded.append([])
            self._computing.append((record.stage, stage.key))
            try:
                with self.cache.write(stage.key, {"stage": record.stage}) as work:
                    details = stage.compute(work, self._inputs(stage)) or {}  # type: ignore[misc]
            finally:
                obsolete = self._superseded.pop()
                self._computing.pop()
            entry = self.cache.lookup(stage.key)
            if entry is None:
                raise PluginError(f"stage {record.stage}: the cache entry vanished after it was written")
            for key in obsolete:  # parts now inside the entry (extraction shards)
                self.cache.remove(key)
            record.status = "computed"
            record.details.update(details)
        else:
            record.status = "cached"
        return stage.load(entry, lambda: self._inputs(stage))  # type: ignore[misc]

    # -- services ------------------------------------------------------------------------------------
    def sharded_array(self, work: Path, items: Sequence[Any], fn: ShardFn, *, label: str, shard_size: int = SHARD_SIZE,
                      filename: str = "vectors.npy", executor: Executor | None = None) -> dict[str, Any]:
        """From inside a stage's compute: ``fn(chunk, advance) -> float32 (len(chunk), ...)`` shard by
        shard into ``work/filename``.

        Each shard is its own cache entry (keyed by the stage's key, its position and its items), so an
        interrupted computation resumes at the shard it was in; once the stage's entry is published,
        the shards are removed. ``executor`` says where the missing shards are computed (default: here,
        one after the other; see :mod:`harness.executors`); they meet in the cache, and are assembled
        here in order. Returns details for the stage record."""
        if not self._computing:
            raise RuntimeError("sharded_array is a service for a stage's compute")
        name, key = self._computing[-1]
        executor = executor or LocalExecutor()
        shards = []
        for start in range(0, len(items), shard_size):
            chunk = items[start : start + shard_size]
            shard_key = make_key(stage="shard", parent=key, start=start, ids=[getattr(it, "id", it) for it in chunk])
            shards.append(Shard(shard_key, start, chunk, {"stage": f"{name}:shard"}))
        self._superseded[-1].extend(s.key for s in shards)
        arrays: dict[str, np.ndarray] = {}
        with self.reporter.task(label, len(items)) as advance:
            for shard in shards:
                # a concurrent run that finishes this stage first removes the shards it superseded:
                # a shard may vanish between lookup and load (a mapped one stays readable)
                found = _load_array(self.cache.lookup(shard.key), filename)
                if found is not None:
                    arrays[shard.key] = found
                    advance(len(shard.items))
            reused = len(arrays)
            missing = [s for s in shards if s.key not in arrays]
            for shard in executor.compute(fn, missing, self.cache, filename, advance):
                found = _load_array(self.cache.lookup(shard.key), filename)
                if found is None:  # removed meanwhile by a concurrent run: compute it again, here
                    publish_shard(self.cache, fn, shard, filename, lambda n=1: None)
                    found = _load_array(self.cache.lookup(shard.key), filename)
                    if found is None:
                        raise PluginError(f"{label}: the shard at item {shard.start} vanished twice from the cache")
                arrays[shard.key] = found
        dims = {a.shape[1:] for a in arrays.values()}
        if len(dims) > 1:
            raise PluginError(f"{label}: shards of different shapes {sorted(dims)}")
        # ordinary writes, not a memory map: a full disk is an error, not a SIGBUS
        with NpyWriter(work / filename, (len(items), *(dims.pop() if dims else (0,)))) as out:
            for s in shards:
                out.write(arrays[s.key])
        details: dict[str, Any] = {"items": len(items), "shards": len(shards), "shards_reused": reused}
        if executor.name != "local":
            details["executor"] = executor.name
        return details

    # -- records -------------------------------------------------------------------------------------
    def records(self) -> list[StageRecord]:
        """One record per stage, in topological order; stages never evaluated are ``cached`` when their
        entry exists (a downstream entry made them unnecessary) and ``not needed`` otherwise."""
        out = list(self._notes)
        for key, stage in self._stages.items():
            record = self._records.get(key)
            if record is None:
                status = "cached" if stage.cached and self.cache.lookup(key) else "not needed"
                record = StageRecord(self._display[key], key, status)
            record.cells = sorted(stage.cells)
            out.append(record)
        return out


def _load_array(entry: Path | None, filename: str) -> np.ndarray | None:
    """A cached array (memory-mapped), or None if the entry is absent or was just removed."""
    if entry is None:
        return None
    try:
        return np.load(entry / filename, mmap_mode="r")
    except FileNotFoundError:
        return None
