"""Typed data of composed retrieval and of SIMAT, passed between the stages of the pipeline.

``ComposedQueries`` is what a composed-retrieval dataset serves as its ``queries`` role (a query is a
database image plus texts, not an image of its own). ``ComposedRetrieval`` is what the search returns and
every composed metric takes. ``SimatGroundTruth`` and ``ComposedGroundTruth`` are the typed ground truths.
All row indices are 0-based positions in the database order the dataset serves. Light: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ComposedQueries:
    """Queries of a composed-retrieval split: (source database row, texts) per query.

    ``texts`` are the unique texts to encode (each once); ``text_index[q, j]`` is the text of role
    ``text_roles[j]`` for query q (SIMAT: roles ``("value", "target")``; a modification sentence:
    ``("modification",)``).
    """

    ids: np.ndarray  # (nq,) str
    source: np.ndarray  # (nq,) int64, database row of the source / reference image
    texts: tuple[str, ...]
    text_index: np.ndarray  # (nq, m) int64 into ``texts``
    text_roles: tuple[str, ...]

    def __post_init__(self) -> None:
        nq = len(self.ids)
        if self.source.shape != (nq,) or self.text_index.shape != (nq, len(self.text_roles)):
            raise ValueError(
                f"queries: {nq} ids, source {self.source.shape}, text_index {self.text_index.shape} "
                f"for roles {self.text_roles}"
            )
        if nq and (self.text_index.min() < 0 or self.text_index.max() >= len(self.texts)):
            raise ValueError("queries: text_index out of range of texts")

    def __len__(self) -> int:
        return len(self.ids)

    def role(self, name: str) -> np.ndarray:
        """(nq,) text indices of one role, e.g. ``role("target")``."""
        return self.text_index[:, self.text_roles.index(name)]


@dataclass(frozen=True)
class ComposedRetrieval:
    """Per-query top-k database rows (best first) and their scores, and each query's source row.

    ``indices`` may or may not contain the source: :meth:`ranking` removes it (the CIRR convention
    and SIMAT's "top-2 when the top-1 is the source" are the same rule). ``-1`` pads rows with fewer
    than k results (score ``-inf``). ``source`` is ``-1`` for a query whose reference image is not in
    the database.
    """

    query_ids: np.ndarray  # (nq,) str
    db_ids: np.ndarray  # (nb,) str
    indices: np.ndarray  # (nq, k) int64
    scores: np.ndarray  # (nq, k) float
    source: np.ndarray  # (nq,) int64

    def __post_init__(self) -> None:
        nq = len(self.query_ids)
        if self.indices.ndim != 2 or self.indices.shape[0] != nq or self.scores.shape != self.indices.shape:
            raise ValueError(f"retrieval: {nq} queries, indices {self.indices.shape}, scores {self.scores.shape}")
        if self.source.shape != (nq,):
            raise ValueError(f"retrieval: source has shape {self.source.shape}, expected ({nq},)")
        nb = len(self.db_ids)
        if self.indices.size and (self.indices.min() < -1 or self.indices.max() >= nb):
            raise ValueError(f"retrieval: indices outside -1..{nb - 1}")

    def ranking(self, k: int) -> np.ndarray:
        """(nq, k) database rows best first with each query's source removed, ``-1``-padded.

        Raises ``ValueError`` if a row was truncated too early to know its first k (a stored row of
        exactly k results that holds the source, with more database images left)."""
        idx = self.indices
        keep = (idx >= 0) & (idx != self.source[:, None])
        # stable compaction: kept entries move to the front in their order
        order = np.argsort(~keep, axis=1, kind="stable")
        packed = np.take_along_axis(np.where(keep, idx, -1), order, axis=1)
        n_keep = keep.sum(axis=1)
        stored = idx.shape[1]
        nb_left = len(self.db_ids) - (self.source >= 0)
        full = (idx >= 0).sum(axis=1) == stored  # the row was cut at the stored k, not exhausted
        short = full & (n_keep < np.minimum(k, nb_left))
        if short.any():
            q = int(np.flatnonzero(short)[0])
            raise ValueError(f"retrieval: query {self.query_ids[q]} has only {n_keep[q]} results after removing "
                             f"its source; search with k >= {k + 1}")
        if stored >= k:
            return np.ascontiguousarray(packed[:, :k])
        return np.concatenate([packed, np.full((len(idx), k - stored), -1, dtype=np.int64)], axis=1)


@dataclass(frozen=True)
class SimatGroundTruth:
    """SIMAT's oracle and the per-query data the score needs (protocols.md §3).

    ``oracle[image row, caption id]`` is OSCAR's image-caption score; image rows are dataset_ids, the
    order of the database role. ``norm2`` is the number of queries *in the whole transfos file* that
    share the query's source word (a column of the file); weights are ``norm2 ** -0.5`` normalised
    to sum 1 over the queries of the split, as the released eval.py does.
    """

    query_ids: np.ndarray  # (nq,) str
    source: np.ndarray  # (nq,) int64 database rows (dataset_id)
    target_caption: np.ndarray  # (nq,) int64 caption ids
    norm2: np.ndarray  # (nq,) float64
    oracle: np.ndarray  # (n_images, n_captions) float32
    split: str = ""

    def __post_init__(self) -> None:
        nq = len(self.query_ids)
        for name in ("source", "target_caption", "norm2"):
            if getattr(self, name).shape != (nq,):
                raise ValueError(f"ground truth: {name} has shape {getattr(self, name).shape}, expected ({nq},)")
        if self.oracle.ndim != 2:
            raise ValueError(f"ground truth: oracle must be 2-D, got {self.oracle.shape}")
        if nq and (self.norm2 <= 0).any():
            raise ValueError("ground truth: norm2 must be > 0")

    @property
    def weights(self) -> np.ndarray:
        """``norm2 ** -0.5`` normalised to sum 1 over the split (float64)."""
        w = 1.0 / np.sqrt(self.norm2.astype(np.float64))
        return w / w.sum() if len(w) else w


@dataclass(frozen=True)
class ComposedGroundTruth:
    """Target database rows per query (GeneCIS / CIRR / FashionIQ style, protocols.md §6), in CSR form:
    the targets of query q are ``target_rows[target_ptr[q]:target_ptr[q + 1]]``."""

    query_ids: np.ndarray  # (nq,) str
    target_ptr: np.ndarray  # (nq + 1,) int64
    target_rows: np.ndarray  # (n_targets,) int64

    def __post_init__(self) -> None:
        if self.target_ptr.shape != (len(self.query_ids) + 1,) or self.target_ptr[-1] != len(self.target_rows):
            raise ValueError("ground truth: target_ptr does not match query_ids and target_rows")

    def targets(self, q: int) -> np.ndarray:
        return self.target_rows[self.target_ptr[q] : self.target_ptr[q + 1]]
