"""The ``faiss`` index plugin: exact streaming search for ``Flat``, any faiss factory string otherwise."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from harness.errors import UserError
from harness.limits import require_memory
from harness.parts import Neighbors

from . import gpu
from . import search as exact

#: Dimensions tried when validating a factory string before the data (and so d) is known: a string
#: is accepted when faiss builds it for one of them (e.g. "PQ7" needs d % 7 == 0).
_PROBE_DIMS = (256, 840, 1024, 5040)
_SEARCH_KEYS = ("k", "global_top_k", "per_query", "range")


@dataclass(frozen=True)
class SearchMode:
    """What ``search`` returns: per-query kNN, global top-K pairs, or range-search pairs."""

    kind: Literal["k", "global_top_k", "range"]
    value: float  # k, K (0 = auto) or the range threshold
    per_query: int = 10  # K = per_query x nq when global_top_k is "auto"

    @classmethod
    def parse(cls, search: dict[str, Any] | None) -> "SearchMode":
        if search is None:
            return cls("k", 100)
        if not isinstance(search, dict):
            raise UserError(f"index faiss: search must be a mapping such as {{k: 100}}, got {search!r}")
        unknown = sorted(set(search) - set(_SEARCH_KEYS))
        if unknown:
            raise UserError(f"index faiss: search: unknown key {unknown[0]!r} (expected one of {', '.join(_SEARCH_KEYS)})")
        modes = [m for m in ("k", "global_top_k", "range") if m in search]
        if len(modes) != 1:
            raise UserError("index faiss: search needs exactly one of k, global_top_k, range, got " + (", ".join(modes) or "none"))
        kind = modes[0]
        if "per_query" in search and not (kind == "global_top_k" and search["global_top_k"] == "auto"):
            raise UserError("index faiss: search.per_query only goes with global_top_k: auto")
        value = search[kind]
        if kind == "range":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"index faiss: search.range must be a finite number, got {value!r}")
            return cls("range", float(value))
        if kind == "global_top_k" and value == "auto":
            return cls("global_top_k", 0, _positive_int(search.get("per_query", 10), "search.per_query"))
        return cls(kind, _positive_int(value, f"search.{kind}"))

    def global_k(self, nq: int) -> int:
        """K of a global_top_k search over ``nq`` queries (``per_query x nq`` when "auto")."""
        return int(self.value) if self.value else self.per_query * nq


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"index faiss: {name} must be a positive integer, got {value!r}")
    return int(value)


def _faiss_reason(error: Exception) -> str:
    """The useful tail of a faiss C++ error ("Error in <signature> at file:line: Error: ... failed: why")."""
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    for marker in ("failed: ", "Error: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", text)


class FaissIndex:
    """faiss index: factory string, L2 / inner product, kNN, global top-K or range search.

    ``factory="Flat"`` searches exactly with the streaming functions of :mod:`.search` (bounded
    memory, deterministic ties). Any other faiss factory string (``IVF4096,PQ8x8``,
    ``OPQ16_64,IVF4096,PQ16``, ``PCA64,LSH``, ``HNSW32``...) is built with ``faiss.index_factory``,
    trained on the training split when it needs training, tuned with ``nprobe`` / ``efSearch``
    through ``faiss.ParameterSpace``, and searched by faiss.

    ``search`` selects the output: ``{k: 100}`` (per-query kNN, the default),
    ``{global_top_k: 500000}`` or ``{global_top_k: auto, per_query: 10}`` (K = 10 x number of
    queries; the DISC21 descriptor track), ``{range: threshold}`` (squared L2 distance below, or
    inner product above, the threshold). For approximate indexes, global top-K is the top-K over the
    union of every query's ranking by the index: each query is searched for a few neighbours and,
    while its last neighbour could still enter the top-K, searched again deeper (see
    :func:`.search.global_top_k_from_knn`).

    Scores are higher-is-better: minus the (approximate) squared distance for L2 indexes, minus the
    Hamming distance for LSH, the inner product for ``metric="ip"``.

    ``device`` (``Flat`` kNN and global top-K): ``auto`` runs them on a GPU when faiss has GPU
    support (``faiss-gpu``) and sees one, else on the CPU; ``cpu``; ``gpu`` (an error without one).
    The result is the same exact search either way (scores equal up to float32 rounding), so the
    device does not enter the cache keys unless written. Range search and the other factories run
    on the CPU.
    """

    version = "1"

    def __init__(
        self,
        factory: str = "Flat",
        metric: Literal["l2", "ip"] = "l2",
        search: dict[str, Any] | None = None,
        nprobe: int | None = None,
        efSearch: int | None = None,
        block_size: int = 65536,
        device: gpu.Device = "auto",
    ) -> None:
        if metric not in ("l2", "ip"):
            raise UserError(f"index faiss: metric must be 'l2' or 'ip', got {metric!r}")
        self.factory = str(factory).strip()
        self.metric = metric
        self.mode = SearchMode.parse(search)
        self.params = {n: _positive_int(v, n) for n, v in (("nprobe", nprobe), ("efSearch", efSearch)) if v is not None}
        self.block_size = _positive_int(block_size, "block_size")
        self.exact = self.factory == "Flat"
        self.device = gpu.check_device(device)
        if device == "gpu" and not self.exact:
            raise UserError(f"index faiss: device 'gpu' applies to factory Flat (exact search); {self.factory!r} runs on the CPU")
        if device == "gpu" and self.mode.kind == "range":
            raise UserError("index faiss: device 'gpu' applies to k and global_top_k searches; range search runs on the CPU")
        if self.exact:
            if self.params:
                raise UserError(f"index faiss: {', '.join(self.params)} does not apply to factory 'Flat' (exact search)")
            self.needs_training = False
        else:
            self.needs_training = not self._probe().is_trained
        self._index: Any = None  # the faiss index (non-Flat, or a loaded Flat)
        self._parts: list[np.ndarray] = []  # Flat: added vectors, kept as given (no copy)
        self._db: np.ndarray | None = None

    # -- building ---------------------------------------------------------------------------------

    def _faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _create(self, d: int) -> Any:
        import faiss

        index = faiss.index_factory(int(d), self.factory, self._faiss_metric())
        self._set_params(index)
        return index

    def _set_params(self, index: Any) -> None:
        """Apply ``nprobe`` / ``efSearch``; one that the index does not have is a UserError."""
        import faiss

        space = faiss.ParameterSpace()
        for name, value in self.params.items():
            try:
                space.set_index_parameter(index, name, value)
            except RuntimeError:
                raise UserError(f"index faiss: {name} does not apply to factory {self.factory!r}") from None

    def _probe(self) -> Any:
        """Build the index for a dummy dimension: catches bad factory strings before any data is read."""
        first_error: Exception | None = None
        for d in _PROBE_DIMS:
            try:
                return self._create(d)
            except RuntimeError as e:
                first_error = first_error or e
        raise UserError(
            f"index faiss: invalid factory string {self.factory!r} (metric {self.metric!r}): {_faiss_reason(first_error)}"
        )

    def _build(self, d: int) -> None:
        if self._index is not None:
            if self._index.d != d:
                raise UserError(f"index faiss: vectors have d={d} but the index was built for d={self._index.d}")
            return
        try:
            self._index = self._create(d)
        except RuntimeError as e:
            raise UserError(f"index faiss: factory {self.factory!r} does not fit d={d}: {_faiss_reason(e)}") from None

    def train(self, x: np.ndarray | None) -> None:
        """Train on the training descriptors (a no-op for indexes that need no training)."""
        if not self.needs_training:
            return
        if x is None or len(x) == 0:
            raise self._untrained_error()
        x = _as_matrix(x)
        self._build(x.shape[1])
        try:
            self._index.train(x)
        except RuntimeError as e:
            raise UserError(
                f"index faiss: training {self.factory!r} on {len(x)} vectors failed: {_faiss_reason(e)}"
            ) from None

    def _untrained_error(self) -> UserError:
        return UserError(
            f"index faiss: factory {self.factory!r} needs training data, and no training split was given "
            "(use a dataset with a training split, or factory Flat / HNSW32)"
        )

    def add(self, x: np.ndarray) -> None:
        x = _as_matrix(x)
        if self.exact:
            if self._parts and self._parts[0].shape[1] != x.shape[1]:
                raise UserError(f"index faiss: vectors have d={x.shape[1]} but earlier ones d={self._parts[0].shape[1]}")
            self._parts.append(x)
            self._db = None
            return
        self._build(x.shape[1])
        if not self._index.is_trained:
            raise self._untrained_error()
        self._index.add(x)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The vectors as the trained index stores them: the decoding of their codes (``sa_decode`` of
        ``sa_encode``; for IVF-PQ the assigned centroid plus the decoded residual, what ``reconstruct``
        returns for an added vector). ``Flat`` stores vectors exactly. Used by active indexing."""
        x = _as_matrix(x)
        if self.exact:
            return x.copy()
        if self._index is None or not self._index.is_trained:
            raise self._untrained_error()
        if x.shape[1] != self._index.d:
            raise UserError(f"index faiss: vectors have d={x.shape[1]} but the index d={self._index.d}")
        try:
            return np.ascontiguousarray(self._index.sa_decode(self._index.sa_encode(x)), dtype=np.float32)
        except RuntimeError as e:
            raise UserError(f"index faiss: factory {self.factory!r} cannot decode its codes (no standalone codec: "
                            f"{_faiss_reason(e)})") from None

    @property
    def ntotal(self) -> int:
        if self.exact:
            return sum(len(p) for p in self._parts)
        return 0 if self._index is None else int(self._index.ntotal)

    def _database(self) -> np.ndarray:
        if self._db is None:
            if not self._parts:
                self._db = np.empty((0, 0), np.float32)
            else:
                self._db = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
                self._parts = [self._db]
        return self._db

    # -- searching --------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, progress: Callable[[int], None] | None = None) -> Neighbors:
        """Search in the configured mode; ``progress(rows)`` follows the database blocks of exact search."""
        queries = _as_matrix(queries)
        nq = len(queries)
        mode = self.mode
        _require_result_memory(mode, nq, self.ntotal)
        if self.ntotal == 0:
            if mode.kind == "k":
                k = int(mode.value)
                return Neighbors.knn(np.full((nq, k), -1), np.full((nq, k), -np.inf, np.float32))
            return exact._empty_pairs()
        if self.exact:
            db = self._database()
            if mode.kind == "k":
                return exact.knn_search(queries, db, int(mode.value), metric=self.metric, block_size=self.block_size,
                                        progress=progress, device=self._device())
            if mode.kind == "global_top_k":
                return exact.global_top_k(queries, db, mode.global_k(nq), metric=self.metric, block_size=self.block_size,
                                          progress=progress, device=self._device())
            return exact.range_search(queries, db, mode.value, metric=self.metric, block_size=self.block_size)
        if queries.shape[1] != self._index.d:
            raise UserError(f"index faiss: queries have d={queries.shape[1]} but the index d={self._index.d}")
        if mode.kind == "k":
            scores, idx = self._knn(queries, int(mode.value))
            return Neighbors.knn(idx, scores)
        if mode.kind == "global_top_k":
            return exact.global_top_k_from_knn(
                lambda rows, kk: self._knn(queries[rows], kk), nq, self.ntotal, mode.global_k(nq)
            )
        return self._range(queries, mode.value)

    def _device(self) -> str:
        """``cpu`` or ``gpu``: where the exact search runs (faiss asked once per search)."""
        return gpu.resolve(self.device)

    def _similarity(self) -> bool:
        import faiss

        return bool(faiss.is_similarity_metric(self._index.metric_type))

    def _knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self._index.search(np.ascontiguousarray(queries), k)
        return exact.mask_padding(exact.to_scores(dist, similarity=self._similarity()), idx), idx

    def _range(self, queries: np.ndarray, threshold: float) -> Neighbors:
        try:
            lims, dist, idx = self._index.range_search(queries, float(threshold))
        except RuntimeError as e:
            raise UserError(f"index faiss: factory {self.factory!r} cannot range-search: {_faiss_reason(e)}") from None
        q = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims.astype(np.int64)))
        s = exact.to_scores(dist, similarity=self._similarity()).astype(np.float32)
        order = np.lexsort((idx, -s, q))
        return Neighbors.pairs(q[order], idx[order], s[order])

    # -- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the built index with ``faiss.write_index`` (Flat: as an IndexFlat of the vectors)."""
        import faiss

        if self.exact:
            db = self._database()
            index = faiss.IndexFlat(db.shape[1], self._faiss_metric())
            index.add(db)
        elif self._index is None:
            raise UserError("index faiss: nothing to save, the index was never trained or filled")
        else:
            index = self._index
        faiss.write_index(index, str(path))

    def load(self, path: str | Path) -> None:
        """Read an index written by :meth:`save` with the same factory and metric."""
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise UserError(f"{path}: not a readable faiss index: {_faiss_reason(e)}") from None
        if index.metric_type != self._faiss_metric():
            raise UserError(f"{path}: index metric does not match metric {self.metric!r}")
        if self.exact:
            # read_index returns the most derived type and owns the memory: no downcast (the
            # downcast wrapper does not own it, and the owner would be freed under our view).
            if not isinstance(index, faiss.IndexFlat):
                raise UserError(f"{path}: expected a Flat index, found {type(index).__name__}")
            n, d = int(index.ntotal), int(index.d)
            # Zero-copy view of the vectors; self._index keeps their owner alive.
            db = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d) if n else np.empty((0, d), np.float32)
            self._index, self._parts, self._db = index, [db], db
            return
        self._set_params(index)
        self._index = index


def _require_result_memory(mode: SearchMode, nq: int, nb: int) -> None:
    """The result arrays a search mode asks for, known once the queries are: refused in one line
    when no machine could hold them (``k`` columns per query are padded, even beyond the database)."""
    if mode.kind == "k":
        require_memory(nq * int(mode.value) * 12, f"index faiss: search.k = {int(mode.value):,} for {nq:,} queries")
    elif mode.kind == "global_top_k":
        k = min(mode.global_k(nq), nq * max(nb, 1))  # there are no more pairs than that
        require_memory(k * 16 * 2, f"index faiss: global top-K with K = {mode.global_k(nq):,}")


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise UserError(f"index faiss: descriptors must be a 2-D array, got shape {x.shape}")
    return x
