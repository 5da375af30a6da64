"""Descriptor post-processing steps (harness.parts.Postprocessor): fit on the training split, apply per role.

Statistics are always fitted on the training split (``fit_on: train``, the only value accepted),
never on the queries or database being scored: DISC21's rules allow training-set statistics only.
Outputs are C-contiguous float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_CHUNK = 65536  # rows per chunk when accumulating training statistics (bounded float64 memory)


def _matrix(x: np.ndarray, step: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"postprocess {step}: descriptors must be a 2-D array, got shape {x.shape}")
    return x


def _require_train(train: np.ndarray | None, step: str, minimum: int = 1) -> np.ndarray:
    if train is None or len(train) == 0:
        raise UserError(f"postprocess {step}: needs a training split to fit on (the dataset has none)")
    train = _matrix(train, step)
    if len(train) < minimum:
        raise UserError(f"postprocess {step}: needs at least {minimum} training vectors, got {len(train)}")
    return train


def _check_dim(dim: int | None, step: str) -> int | None:
    if dim is not None and (isinstance(dim, bool) or int(dim) != dim or dim < 1):
        raise UserError(f"postprocess {step}: dim must be a positive integer, got {dim!r}")
    return None if dim is None else int(dim)


class PCA:
    """PCA projection to ``dim`` dimensions (all if None), fitted on the training split."""

    version = "1"
    rowwise = True  # each output row depends on its input row only: the runner applies it in blocks
    name = "pca"

    def __init__(self, dim: int | None = None, fit_on: Literal["train"] = "train") -> None:
        if fit_on != "train":
            raise UserError(f"postprocess {self.name}: fit_on must be 'train' (statistics never come from the scored sets)")
        self.dim = _check_dim(dim, self.name)
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None  # (d, dim) float32
        self.eigenvalues: np.ndarray | None = None  # (dim,) descending

    def fit(self, train: np.ndarray | None) -> None:
        train = _require_train(train, self.name, minimum=2)
        n, d = train.shape
        dim = d if self.dim is None else self.dim
        if dim > d:
            raise UserError(f"postprocess {self.name}: dim={dim} exceeds the descriptor dimension {d}")
        # Chunked float64 moments: exact enough, and memory stays O(chunk x d + d^2).
        mean = np.zeros(d)
        for i in range(0, n, _CHUNK):
            mean += train[i : i + _CHUNK].sum(0, dtype=np.float64)
        mean /= n
        cov = np.zeros((d, d))
        for i in range(0, n, _CHUNK):
            c = train[i : i + _CHUNK].astype(np.float64) - mean
            cov += c.T @ c
        cov /= n - 1
        values, vectors = np.linalg.eigh(cov)
        values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
        # Deterministic signs: the largest-magnitude coordinate of each axis is positive.
        signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(dim)])
        vectors = vectors * np.where(signs == 0, 1, signs)
        self.mean, self.eigenvalues = mean, np.maximum(values, 0.0)
        self.projection = self._scale(vectors, self.eigenvalues).astype(np.float32)
        self._offset = (mean @ self.projection.astype(np.float64)).astype(np.float32)

    def _scale(self, vectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        return vectors

    def state(self) -> dict[str, np.ndarray]:
        """The fitted statistics, stored with the fit stage so that a cached fit is not redone."""
        return {"mean": self.mean, "eigenvalues": self.eigenvalues, "projection": self.projection, "offset": self._offset}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.eigenvalues = state["mean"], state["eigenvalues"]
        self.projection, self._offset = state["projection"], state["offset"]

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        if self.projection is None:
            raise UserError(f"postprocess {self.name}: apply called before fit")
        x = _matrix(x, self.name)
        if x.shape[1] != self.projection.shape[0]:
            raise UserError(f"postprocess {self.name}: {role} have d={x.shape[1]}, fitted on d={self.projection.shape[0]}")
        # x @ P - mean @ P: never materializes the centred copy of x.
        out = np.asarray(x, dtype=np.float32) @ self.projection
        out -= self._offset
        return np.ascontiguousarray(out)


    def apply_torch(self, x: "torch.Tensor") -> "torch.Tensor":
        """:meth:`apply` on a torch tensor, differentiable (active indexing optimises images through it)."""
        import torch

        if self.projection is None:
            raise UserError(f"postprocess {self.name}: apply called before fit")
        p = torch.as_tensor(np.asarray(self.projection), dtype=x.dtype, device=x.device)
        return x @ p - torch.as_tensor(np.asarray(self._offset), dtype=x.dtype, device=x.device)


class PCAWhiten(PCA):
    """PCA-whitening to ``dim`` dimensions: each axis divided by sqrt(eigenvalue + eps x largest eigenvalue).

    The relative ``eps`` guards against near-zero eigenvalues (rank-deficient training data).
    """

    version = "1"
    name = "pca_whiten"

    def __init__(self, dim: int | None = None, eps: float = 1e-6, fit_on: Literal["train"] = "train") -> None:
        super().__init__(dim, fit_on)
        if not (eps >= 0 and np.isfinite(eps)):
            raise UserError(f"postprocess {self.name}: eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)

    def _scale(self, vectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        floor = self.eps * (values[0] if len(values) else 0.0)
        denom = np.sqrt(values + floor)
        if np.any(denom == 0):
            raise UserError(f"postprocess {self.name}: the training descriptors have zero variance; set eps > 0")
        return vectors / denom


class _Stateless:
    """A step with nothing to fit: the runner need not describe the train split for it."""

    version = "1"
    needs_training = False

    def fit(self, train: np.ndarray | None) -> None:
        pass

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


class L2Normalize(_Stateless):
    """L2 normalization of every descriptor (all-zero rows stay zero)."""

    rowwise = True  # each output row depends on its input row only: the runner applies it in blocks

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        x = np.array(_matrix(x, "l2_normalize"), dtype=np.float32)  # a copy: the input stays untouched
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.maximum(norms, np.finfo(np.float32).tiny)
        return x

    def apply_torch(self, x: "torch.Tensor") -> "torch.Tensor":
        """:meth:`apply` on a torch tensor, differentiable."""
        return x / x.norm(dim=1, keepdim=True).clamp_min(float(np.finfo(np.float32).tiny))


class Truncate(_Stateless):
    """Dimensionality cap: keep the first ``dim`` components (DISC21 allows at most 256)."""

    rowwise = True  # each output row depends on its input row only: the runner applies it in blocks

    def __init__(self, dim: int = 256) -> None:
        self.dim = _check_dim(dim, "truncate")

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        return np.ascontiguousarray(_matrix(x, "truncate")[:, : self.dim], dtype=np.float32)

    def apply_torch(self, x: "torch.Tensor") -> "torch.Tensor":
        """:meth:`apply` on a torch tensor, differentiable."""
        return x[:, : self.dim]


class ScoreNorm:
    """DISC21 score normalization with training-set neighbours (protocols.md §1), as one extra dimension.

    new_score(q, r) = <q, r> - factor * s_n(q), where s_n(q) is the n-th largest inner product between
    q and the training descriptors (1-based: n = 1 is q's most similar training vector).
    SSCD variant, chosen by giving ``first`` and ``last``: s(q) = mean of the inner products at the
    0-based ranks first..last (inclusive), multiplied by ``beta`` (default 1.0) instead of ``factor``
    (SSCD's "1.0[0,2]" is ``first=0, last=2, beta=1.0``).

    The trick: ``apply(queries)`` appends ``-factor * s(q)`` as a last column and ``apply(database)``
    (and ``train``) appends ``1``, so an **inner-product** search gives exactly the new score. The index
    must therefore use ``metric: ip``, and this must be the last post-processing step (a later
    L2 normalization or PCA would mix the extra column with the others).
    """

    version = "1"
    rowwise = True  # each output row depends on its input row only: the runner applies it in blocks

    def __init__(
        self,
        n: int = 10,
        factor: float = 2.0,
        first: int | None = None,
        last: int | None = None,
        beta: float | None = None,
        fit_on: Literal["train"] = "train",
    ) -> None:
        if fit_on != "train":
            raise UserError("postprocess score_norm: fit_on must be 'train' (never the references: DISC21 rule)")
        self.sscd = first is not None or last is not None
        if self.sscd:
            if first is None or last is None or not (0 <= first <= last):
                raise UserError(f"postprocess score_norm: needs 0 <= first <= last, got first={first!r}, last={last!r}")
            if n != 10 or factor != 2.0:
                raise UserError("postprocess score_norm: n and factor do not apply with first/last; use beta")
            self.ranks, self.mult = (int(first), int(last)), 1.0 if beta is None else float(beta)
        else:
            if beta is not None:
                raise UserError("postprocess score_norm: beta goes with first/last; without them use factor")
            if isinstance(n, bool) or int(n) != n or n < 1:
                raise UserError(f"postprocess score_norm: n must be an integer >= 1 (1-based rank), got {n!r}")
            self.ranks, self.mult = (int(n) - 1, int(n) - 1), float(factor)
        self.train: np.ndarray | None = None

    def fit(self, train: np.ndarray | None) -> None:
        train = _require_train(train, "score_norm", minimum=self.ranks[1] + 1)
        self.train = np.ascontiguousarray(train, dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"train": self.train}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.train = np.ascontiguousarray(state["train"], dtype=np.float32)

    def similarity_stat(self, x: np.ndarray) -> np.ndarray:
        """s(q) per row of x: the mean of its training inner products at 0-based ranks ranks[0]..ranks[1]."""
        import faiss

        if self.train is None:
            raise UserError("postprocess score_norm: apply called before fit")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty(0, np.float32)
        sims, _ = faiss.knn(x, self.train, self.ranks[1] + 1, metric=faiss.METRIC_INNER_PRODUCT)
        return sims[:, self.ranks[0] : self.ranks[1] + 1].mean(1, dtype=np.float64).astype(np.float32)

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        x = _matrix(x, "score_norm")
        if self.train is not None and x.shape[1] != self.train.shape[1]:
            raise UserError(f"postprocess score_norm: {role} have d={x.shape[1]}, training d={self.train.shape[1]}")
        if role == "queries":
            extra = -self.mult * self.similarity_stat(x)
        else:
            extra = np.ones(len(x), np.float32)
        return np.ascontiguousarray(np.hstack([np.asarray(x, np.float32), extra[:, None].astype(np.float32)]))


class ShuffleDatabase(_Stateless):
    """Chance baseline: permute the database descriptors, so every reference gets another's vector.

    The score distribution, the dimensions and everything else stay as they were; only the link between a
    reference id and its content is broken. A track's metrics under this step are its shuffled baseline.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def apply(self, x: np.ndarray, role: str) -> np.ndarray:
        x = _matrix(x, "shuffle_database")
        if role != "database":
            return x
        return np.ascontiguousarray(x[np.random.default_rng(self.seed).permutation(len(x))])


POSTPROCESSORS = {
    "pca": PCA,
    "pca_whiten": PCAWhiten,
    "l2_normalize": L2Normalize,
    "truncate": Truncate,
    "score_norm": ScoreNorm,
    "shuffle_database": ShuffleDatabase,
}
