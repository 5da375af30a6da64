"""Where the shards of a sharded computation (descriptor extraction) are computed.

``local`` (the default) computes them one after the other in this process. ``ray`` hands them to Ray
actors: each actor receives the stage's computation (the created descriptor part, serialised once
into Ray's object store) with its first shard, then computes shard after shard and publishes each
into the shared cache itself, atomically, as the local executor does. The driver only waits,
advances the progress bar per finished shard and assembles the shards from the cache
(:meth:`harness.stages.Engine.sharded_array`). An actor that dies mid-shard is replaced and its
unfinished shards are computed again; a published shard is never computed again. The executor never
enters a cache key: the vectors are the same either way.

Ray is an optional extra, imported only here and only when a shard is actually missing (a cached
stage never starts Ray). Without ``address`` the executor starts a private local Ray bound to
127.0.0.1 (:mod:`harness.ray_session`); with one it joins that cluster, whose nodes must see the cache
at the same path (a shared file system).
"""

from __future__ import annotations

import socket
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from harness.cache import Cache
from harness.errors import PluginError, UserError
from harness.npy import save_npy
from harness.progress import Advance

#: fn(items, advance) -> float32 (len(items), ...): the computation of one shard
ShardFn = Callable[[Sequence[Any], Advance], np.ndarray]

MAX_RESTARTS = 3  # Ray workers replaced per stage before it fails
IN_FLIGHT = 2  # shards queued per actor: the next one is ready when the current one is published


@dataclass(frozen=True)
class Shard:
    """One shard: its cache key, where it starts, its items, and the ``meta.json`` of its entry."""

    key: str
    start: int
    items: Sequence[Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    name: str

    def compute(self, fn: ShardFn, shards: Sequence[Shard], cache: Cache, filename: str,
                advance: Advance) -> Iterator[Shard]:
        """Compute every shard into its cache entry, yielding each once it is published (in any order)."""
        ...


def publish_shard(cache: Cache, fn: ShardFn, shard: Shard, filename: str, advance: Advance) -> None:
    """Compute one shard and publish it as its cache entry (a private directory, renamed into place)."""
    with cache.write(shard.key, shard.meta) as work:
        save_npy(work / filename, np.ascontiguousarray(fn(shard.items, advance), dtype=np.float32))


class LocalExecutor:
    """The shards one after the other, in this process."""

    name = "local"

    def compute(self, fn: ShardFn, shards: Sequence[Shard], cache: Cache, filename: str,
                advance: Advance) -> Iterator[Shard]:
        for shard in shards:
            publish_shard(cache, fn, shard, filename, advance)
            yield shard


def make_executor(settings: dict[str, Any]) -> Executor:
    """The executor an ``extraction`` mapping asks for (validated by :mod:`harness.spec`)."""
    if settings.get("executor", "local") == "ray":
        return RayExecutor(address=settings.get("address"), actors=settings.get("actors"))
    return LocalExecutor()


class ShardWorker:
    """A Ray actor: computes shards and publishes them into a cache on the same root as the driver's.
    The computation (e.g. the created descriptor, its model loaded) arrives once per stage and stays
    until the next stage's replaces it; actors outlive stages, so a run starts them once."""

    def __init__(self) -> None:
        self.fn_key: str | None = None
        self.fn: ShardFn | None = None
        self.caches: dict[str, Cache] = {}

    def compute(self, fn_key: str, fn_ref: list[Any], root: str, filename: str, shard: Shard) -> str:
        if fn_key != self.fn_key:
            import ray

            self.fn = None  # the previous stage's model goes before the next one arrives
            # the reference arrives wrapped so that Ray does not resolve it for every shard
            self.fn, self.fn_key = ray.get(fn_ref[0]), fn_key
        cache = self.caches.get(root) or self.caches.setdefault(root, Cache(root))
        # an earlier worker may have published it and died before answering: never compute it twice
        if cache.lookup(shard.key) is None:
            publish_shard(cache, self.fn, shard, filename, lambda n=1: None)  # type: ignore[arg-type]
        return socket.gethostname()


@dataclass
class RayExecutor:
    """Shards on Ray actors (``actors`` of them; default: one per CPU of the cluster, at most one per
    shard), each actor one CPU. A dead actor (killed, out of memory, its node lost) is replaced and its
    unfinished shards go to the replacement, up to ``MAX_RESTARTS`` times per stage; harness does
    this itself rather than through Ray's actor restarts, which want the constructor's arguments
    kept alive in the object store."""

    address: str | None = None
    actors: int | None = None
    name: str = "ray"

    def compute(self, fn: ShardFn, shards: Sequence[Shard], cache: Cache, filename: str,
                advance: Advance) -> Iterator[Shard]:
        if not shards:
            return
        from harness.ray_session import connect, session_state

        ray = connect(self.address, cache)  # (imports ray: harness configures a local Ray first)
        from ray import exceptions as rex

        try:
            fn_ref = ray.put(fn)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many types for one reason
            raise UserError(f"the computation cannot be sent to Ray workers (it must be picklable): "
                            f"{type(exc).__name__}: {exc}") from None
        fn_key = uuid.uuid4().hex  # names this computation for the actors, which keep the last one
        count = min(self.actors or max(1, int(ray.cluster_resources().get("CPU", 1))), len(shards))
        pool: list[Any] = session_state().setdefault("shard_workers", [])
        worker = ray.remote(num_cpus=1)(ShardWorker)
        while len(pool) < count:
            pool.append(worker.remote())
        queue: deque[Shard] = deque(shards)
        running: dict[Any, tuple[int, Any, Shard]] = {}  # task -> (slot, actor, shard)
        deaths = 0

        def submit(slot: int) -> None:
            if queue:
                shard = queue.popleft()
                task = pool[slot].compute.remote(fn_key, [fn_ref], str(cache.root), filename, shard)
                running[task] = (slot, pool[slot], shard)

        finished = False
        try:
            for _ in range(IN_FLIGHT):
                for slot in range(count):
                    submit(slot)
            while running:
                (ref,), _ = ray.wait(list(running), num_returns=1)
                slot, actor, shard = running.pop(ref)
                try:
                    host = _result(ray, ref, shard)
                except rex.RayActorError as exc:
                    if actor is pool[slot]:  # the first of its tasks to report the death: replace it
                        deaths += 1
                        if deaths > MAX_RESTARTS:
                            raise PluginError(f"Ray workers died {deaths} times, last on the shard at item "
                                              f"{shard.start}: {_first_line(exc)}") from None
                        pool[slot] = worker.remote()
                    queue.appendleft(shard)  # (the new worker skips it if it was published before the death)
                    submit(slot)
                    continue
                if cache.lookup(shard.key) is None:
                    raise UserError(f"a Ray worker on {host} published a shard this machine cannot see in "
                                    f"{cache.root}: every node must see the cache at the same path (a shared "
                                    f"file system; set HARNESS_CACHE_DIR on every node)")
                advance(len(shard.items))
                yield shard
                submit(slot)
            finished = True
        finally:
            if not finished:  # an error, or the caller stopped early: stop the work still queued
                for actor in pool:
                    ray.kill(actor)
                pool.clear()


def _result(ray: Any, ref: Any, shard: Shard) -> str:
    """The worker's answer; its exception as the original one (one clear line, not a remote traceback).
    A dead worker (``RayActorError``) is the caller's to handle."""
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.RayActorError:
        raise
    except (rex.RayTaskError, rex.RaySystemError) as exc:
        cause = getattr(exc, "cause", None) if isinstance(exc, rex.RayTaskError) else exc
        if isinstance(cause, (ImportError, rex.RaySystemError)):  # unpickling the part needs its plugin
            raise UserError(f"a Ray worker cannot load the computation ({_first_line(cause)}): every node needs "
                            f"harness and the spec's plugin packages installed") from None
        if isinstance(cause, BaseException):
            raise cause from None
        raise PluginError(f"a Ray worker failed on the shard at item {shard.start}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
