"""Structural contracts of the parts plugins provide, and the data the core passes between stages.

Everything here is light (numpy and PIL only, imported lazily where possible). A plugin's objects need
not inherit from these classes: the contracts are ``typing.Protocol`` s, checked by
:mod:`harness.testing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

#: Roles of the retrieval pipeline's datasets; ``train`` is optional. Other pipelines ask for their own.
ROLES = ("queries", "database", "train")


@dataclass(frozen=True)
class Field:
    """A spec key a pipeline reads, and how the core validates it before anything runs.

    ``kind``: ``"part"`` (one part of ``part_kind``), ``"parts"`` (a list of them), ``"chain"`` (one part
    or a list, applied in order), ``"str"``, ``"int"``, ``"float"``, ``"bool"``, ``"mapping"`` (any
    mapping, checked by the pipeline) or ``"any"``.

    ``check`` (plain kinds only): ``check(value) -> [(sub_path, message, suggestion or None), ...]``,
    the pipeline's own rules for the value, run at validation time for every grid cell, so that a bad
    option is reported with ``file:line`` before anything runs (``sub_path``: a tuple of keys / indices
    inside the value, ``()`` for the value itself)."""

    kind: str
    part_kind: str | None = None
    required: bool = False
    doc: str = ""
    check: "Callable[[Any], Iterable[tuple[tuple, str, str | None]]] | None" = None


@dataclass(frozen=True)
class Item:
    """One image of a split: an id (as the benchmark spells it) and where its pixels are.

    Items are small and picklable so that loader worker processes can open them. ``bbox`` crops the
    image after loading (revisitop queries are cropped to their bounding box).
    """

    id: str
    path: str
    bbox: tuple[float, float, float, float] | None = None

    def load(self) -> "Image.Image":
        from PIL import Image

        from harness.errors import UserError

        from harness.files import NotRegularFile, open_regular  # a FIFO named x.jpg must not block the run

        try:
            with open_regular(self.path) as fh, Image.open(fh) as im:
                im.load()
                image = im.convert("RGB")
        except NotRegularFile as exc:
            raise UserError(f"{self.path}: {exc.strerror}, expected an image file") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # missing, truncated, not an image
            raise UserError(f"{self.path}: cannot read image ({type(exc).__name__}: {exc})") from None
        if self.bbox is not None:
            x1, y1, x2, y2 = self.bbox
            image = image.crop((int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))))
        return image


class ItemList(list):
    """A list of :class:`Item` with, optionally, per-item operation records (what each image went
    through: ``[[{"op": ..., **params}, ...], ...]``, aligned with the items)."""

    operations: list[list[dict[str, Any]]] | None = None

    @classmethod
    def of(cls, items: Sequence[Item], operations: list[list[dict[str, Any]]] | None = None) -> "ItemList":
        out = cls(items)
        out.operations = operations
        return out


def apply_recorded(transform: Any, image: "Image.Image", rng: np.random.Generator,
                   name: str) -> tuple["Image.Image", list[dict[str, Any]]]:
    """Apply a transform and say what it did (see :class:`Transform` for the optional methods)."""
    recorded = getattr(transform, "apply_recorded", None)
    if callable(recorded):
        image, ops = recorded(image, rng)
        return image, [dict(op) for op in ops]
    out = transform(image, rng)
    static = getattr(transform, "operations", None)
    return out, ([dict(op) for op in static()] if callable(static) else [{"op": name}])


@dataclass
class Neighbors:
    """What an index search returns, in database row indices (not ids). Higher score = more similar.

    Two forms:

    - ``knn``: ``indices`` and ``scores`` of shape ``(nq, k)``, each row sorted best first; ``-1`` in
      ``indices`` pads rows with fewer than k results.
    - ``pairs``: flat arrays ``q``, ``r``, ``score`` of equal length (global top-K or range search);
      a query may appear any number of times, including zero.
    """

    indices: np.ndarray | None = None
    scores: np.ndarray | None = None
    q: np.ndarray | None = None
    r: np.ndarray | None = None
    score: np.ndarray | None = None

    @classmethod
    def knn(cls, indices: np.ndarray, scores: np.ndarray) -> "Neighbors":
        indices = np.asarray(indices, dtype=np.int64)
        scores = np.asarray(scores)
        if indices.shape != scores.shape or indices.ndim != 2:
            raise ValueError(f"knn indices {indices.shape} and scores {scores.shape} must be equal 2-D shapes")
        return cls(indices=indices, scores=scores)

    @classmethod
    def pairs(cls, q: np.ndarray, r: np.ndarray, score: np.ndarray) -> "Neighbors":
        q, r, score = (np.asarray(a).ravel() for a in (q, r, score))
        if not (len(q) == len(r) == len(score)):
            raise ValueError(f"pair arrays differ in length: {len(q)}, {len(r)}, {len(score)}")
        return cls(q=q.astype(np.int64), r=r.astype(np.int64), score=score)

    @property
    def form(self) -> str:
        return "knn" if self.indices is not None else "pairs"

    def as_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, r, score) flat arrays; padding (-1) of kNN rows is dropped."""
        if self.indices is None:
            return self.q, self.r, self.score  # type: ignore[return-value]
        nq, k = self.indices.shape
        q = np.repeat(np.arange(nq, dtype=np.int64), k)
        r = self.indices.ravel()
        s = self.scores.ravel()  # type: ignore[union-attr]
        keep = r >= 0
        return q[keep], r[keep], s[keep]

    def as_rankings(self, nq: int) -> np.ndarray:
        """Rankings of shape (K, nq): column j lists database rows for query j, best first.

        From the pairs form, each query's pairs are ordered by score descending with a *stable* sort
        (ties keep the index's output order); short columns are padded with -1.
        """
        if self.indices is not None:
            return np.ascontiguousarray(self.indices.T)
        q, r, s = self.as_pairs()
        order = np.lexsort((-s.astype(np.float64), q))  # by query, then score descending, stable
        q, r = q[order], r[order]
        counts = np.bincount(q, minlength=nq)
        k = int(counts.max()) if len(counts) else 0
        out = np.full((k, nq), -1, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.arange(len(q)) - np.repeat(starts, counts)
        out[pos, q] = r
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The non-empty arrays, for storage."""
        names = ("indices", "scores") if self.indices is not None else ("q", "r", "score")
        return {n: getattr(self, n) for n in names}


@dataclass
class Retrieval:
    """Neighbors plus the ids they refer to: the input of every retrieval metric. ``query_operations``:
    per query, the operations its image went through (``[{"op": ..., **params}]``), when recorded."""

    query_ids: np.ndarray  # (nq,) str
    db_ids: np.ndarray  # (nb,) str
    neighbors: Neighbors
    query_operations: list[list[dict[str, Any]]] | None = None

    def groups(self) -> dict[str, np.ndarray]:
        """Operation family -> boolean mask of the queries that went through it (a query with several
        operations is in several groups; one with none is in ``"none"``)."""
        if self.query_operations is None:
            return {}
        names = [sorted({str(op.get("op")) for op in ops}) or ["none"] for ops in self.query_operations]
        out: dict[str, np.ndarray] = {}
        for g in sorted({n for ns in names for n in ns}):
            out[g] = np.array([g in ns for ns in names], dtype=bool)
        return out

    def subset(self, mask: np.ndarray) -> "Retrieval":
        """The retrieval of the queries where ``mask`` is true (database unchanged)."""
        mask = np.asarray(mask, dtype=bool)
        new_index = np.cumsum(mask) - 1
        nb = self.neighbors
        if nb.form == "knn":
            sub = Neighbors.knn(nb.indices[mask], nb.scores[mask])  # type: ignore[index]
        else:
            keep = mask[nb.q]  # type: ignore[index]
            sub = Neighbors.pairs(new_index[nb.q[keep]], nb.r[keep], nb.score[keep])  # type: ignore[index]
        ops = None if self.query_operations is None else [o for o, m in zip(self.query_operations, mask) if m]
        return Retrieval(self.query_ids[mask], self.db_ids, sub, ops)

    def predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query_id, database_id, score) arrays, one row per retrieved pair."""
        q, r, s = self.neighbors.as_pairs()
        return self.query_ids[q], self.db_ids[r], s

    def rankings(self) -> np.ndarray:
        """(K, nq) database row indices, best first (see :meth:`Neighbors.as_rankings`)."""
        return self.neighbors.as_rankings(len(self.query_ids))


@runtime_checkable
class Dataset(Protocol):
    def items(self, role: str) -> Sequence[Item]:
        """Items of a role in ``ROLES``; raise ``KeyError`` for a role the dataset does not have."""

    def ground_truth(self) -> Any:
        """The ground truth, in the typed form the track's metrics take."""

    def fingerprint(self) -> str:
        """A string that changes whenever the data the dataset serves changes (ids, files, GT)."""


# Optional for datasets: ``prepare(progress) -> None`` builds or checks files before use.


@runtime_checkable
class Transform(Protocol):
    """Optional, for per-operation records: ``operations() -> [{"op": name, **absolute params}]`` (the
    same for every image: exact attacks) or ``apply_recorded(image, rng) -> (image, operations)`` (what
    was applied to this image: random chains). Without either, the record is the part's name."""

    def __call__(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image": ...


@runtime_checkable
class Descriptor(Protocol):
    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        """float32 array of shape (len(images), d)."""


@runtime_checkable
class BatchedDescriptor(Descriptor, Protocol):
    """Optional richer form: the core runs ``preprocess`` in loader worker processes and ``forward`` on
    batches, placing ``model`` on the best device. ``preprocess`` must be picklable. Any descriptor may
    also offer ``extraction_batch_size(configured: int | None) -> int``: the batch size extraction uses,
    given the run's ``extraction.batch_size`` (None when unset), e.g. its own setting for its device."""

    def preprocess(self, image: "Image.Image") -> Any: ...

    def forward(self, batch: Any) -> np.ndarray: ...


@runtime_checkable
class Postprocessor(Protocol):
    """Optional attributes: ``needs_training`` (default True: the runner describes the train split for
    ``fit``; stateless steps set False) and ``rowwise`` (default False; True lets the runner apply the
    step block by block, for steps whose output row depends on the input row alone). Optional methods
    ``state() -> dict[str, ndarray]`` and ``load_state(state)``: the fitted statistics, stored with the
    fit stage, so that a cached fit is never redone (without them a cached fit is redone from the
    training descriptors when a downstream stage must be computed)."""

    def fit(self, train: np.ndarray | None) -> None:
        """Fit on training descriptors (``None`` when the dataset has no training split)."""

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        """Transform the descriptors of one role (``"queries"``, ``"database"`` or ``"train"``)."""


@runtime_checkable
class Index(Protocol):
    """Optional: ``needs_training`` (default False; True makes the runner call ``train`` with the
    post-processed train split first)."""

    def train(self, x: np.ndarray) -> None: ...

    def add(self, x: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray) -> Neighbors:
        """Optional richer form: search(queries, progress=None), progress(rows) per database block."""


@runtime_checkable
class Watermarker(Protocol):
    def embed(self, image: "Image.Image", key: int) -> "Image.Image": ...

    def detect(self, image: "Image.Image", key: int) -> Any: ...


@runtime_checkable
class Metric(Protocol):
    """Optional attributes: ``input_type`` (the pipeline output it takes; default ``"retrieval"``; a spec
    pairing a metric with a pipeline of another output type is refused at validation) and ``display``
    (value name or ``fnmatch`` pattern -> ``"percent"`` | ``"number"`` | ``"integer"``: how the
    terminal shows each value; default ``"number"``) and ``main_metric`` (the value leaderboards rank by
    and reports plot)."""

    protocol: str
    version: str

    def __call__(self, ground_truth: Any, retrieval: Retrieval) -> dict[str, float | None]: ...


@runtime_checkable
class Pipeline(Protocol):
    """The shape of a track: which spec keys it reads, which dataset roles it needs, what its metrics
    take, and how its stages are built. ``build`` creates parts through ``ctx`` (a
    :class:`harness.context.BuildContext`), adds stages to the run's graph and returns the metric stages
    by label; the core evaluates them (lazily: a cached metric loads nothing else)."""

    fields: dict[str, Field]
    roles: tuple[str, ...]
    metric_input: str

    def build(self, cell: Any, ctx: Any) -> dict[str, Any]: ...


@runtime_checkable
class Scorer(Protocol):
    def score(self, submission: str, ground_truth: str) -> dict[str, Any]: ...
