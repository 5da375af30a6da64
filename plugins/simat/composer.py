"""Composers: parts that build composed-retrieval query vectors from image and text embeddings.

Proposed new kind ``composer`` (hook ``register_composers``). Contract:

- ``prepare_images(x) -> (n, d)``: database image embeddings as the search sees them (the source
  vectors of queries are rows of this). Depends on the composer's *database parameters* only
  (``database_params``: for SIMAT's arithmetic, ``heads``), never on lambda, so a lambda grid shares it.
- ``prepare_texts(t) -> (nt, d)``: the same for the unique texts (``database_params`` too).
- ``compose(images, texts, queries) -> (nq, d)`` float32 from the prepared arrays and
  :class:`~harness_plugins.simat.types.ComposedQueries`; this is where lambda enters.
- optional ``coefficients() -> (m,)``: the composer is linear, q = I[src] + sum_j c_j T[text_j]
  (j over ``text_roles``), so the search may skip forming q (:func:`..search.search_linear`,
  which shares the lambda-free Gram matrix I I^T across a grid).

SIMAT's eval.py (checked against the released file): the linear heads are applied to the *raw*
CLIP embeddings (``encode_image`` / ``encode_text`` output, not unit-norm), then each side is
L2-normalised; the query ``I[src] + lambda (T[target] - T[value])`` is used as is (no
renormalisation: it would not change an inner-product ranking). To reproduce it with heads, the
descriptor must give unnormalised embeddings (``openclip`` with ``normalize: false``); without heads
normalising twice changes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from harness.errors import UserError

from .types import ComposedQueries

#: Heads files are two 512 x 512 layers in practice (2 MB); refuse anything absurd.
MAX_HEADS_BYTES = 512 * 1024 * 1024


def l2_normalize(x: np.ndarray, what: str) -> np.ndarray:
    """Rows divided by their L2 norm (float32); a zero or non-finite row is an error naming ``what``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise UserError(f"{what}: expected a 2-D array of embeddings, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise UserError(f"{what}: row {int(np.flatnonzero(bad)[0])} has NaN or inf")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norm[:, 0] == 0
    if zero.any():
        raise UserError(f"{what}: row {int(np.flatnonzero(zero)[0])} is all zeros and cannot be normalised")
    return x / norm


class LinearHeads:
    """The ``img_head`` / ``txt_head`` linear layers of a safetensors file (y = x W^T + b)."""

    def __init__(self, path: str) -> None:
        from harness.submissions import check_file
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = os.path.expanduser(path)
        check_file(path, MAX_HEADS_BYTES)
        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
        self.path = path
        self.layers: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for side in ("img_head", "txt_head"):
            w = state.get(f"{side}.weight")
            if w is None:
                raise UserError(f"{path}: missing tensor {side}.weight (have: {', '.join(sorted(state)) or 'none'}; "
                                "convert SIMAT's heads with python -m harness_plugins.simat.convert_heads)")
            b = state.get(f"{side}.bias")
            if w.ndim != 2 or (b is not None and b.shape != (w.shape[0],)):
                raise UserError(f"{path}: {side}: weight {w.shape} and bias {None if b is None else b.shape} "
                                "do not form a linear layer")
            w64 = w.astype(np.float32)
            if not np.isfinite(w64).all() or (b is not None and not np.isfinite(b.astype(np.float32)).all()):
                raise UserError(f"{path}: {side} holds NaN or inf")
            self.layers[side] = (w64, None if b is None else b.astype(np.float32))

    def apply(self, side: str, x: np.ndarray, what: str) -> np.ndarray:
        w, b = self.layers[side]
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise UserError(f"{what}: embeddings of dimension {x.shape[-1]} do not fit {self.path} "
                            f"{side} (input dimension {w.shape[1]})")
        y = x @ w.T
        return y + b if b is not None else y


class SimatArithmetic:
    """SIMAT's embedding arithmetic: q = I[src] + lambda (T[target] - T[value]), optional linear heads.

    ``lambda_`` is lambda (``lambda`` is a Python keyword: the spec key is ``lambda_``). ``heads``: a
    local safetensors file with ``img_head.weight/bias`` and ``txt_head.weight/bias`` (SIMAT's pickled
    heads converted by ``python -m harness_plugins.simat.convert_heads``). I and T are unit-norm after
    the heads.
    """

    version = "1"
    #: Parameters prepare_images / prepare_texts depend on: a lambda grid shares those stages.
    database_params = ("heads",)
    text_roles = ("value", "target")

    def __init__(self, lambda_: float = 1.0, heads: str | None = None) -> None:
        if not np.isfinite(lambda_):
            raise UserError(f"lambda_ must be a finite number (got {lambda_})")
        self.lambda_ = float(lambda_)
        self.heads_path = os.path.expanduser(heads) if heads else None
        self._heads: LinearHeads | None = None

    @property
    def heads(self) -> LinearHeads | None:
        if self.heads_path is not None and self._heads is None:
            self._heads = LinearHeads(self.heads_path)
        return self._heads

    def fingerprint(self) -> str:
        """What the prepared embeddings depend on: the heads file's sha256, or ``no-heads``."""
        if self.heads_path is None:
            return "no-heads"
        from harness_plugins.timm.checkpoint import existing_file, file_sha256

        return "heads:" + file_sha256(existing_file(self.heads_path, "heads"))

    def prepare_images(self, x: np.ndarray) -> np.ndarray:
        heads = self.heads
        if heads is not None:
            x = heads.apply("img_head", x, "image embeddings")
        return l2_normalize(x, "image embeddings")

    def prepare_texts(self, t: np.ndarray) -> np.ndarray:
        heads = self.heads
        if heads is not None:
            t = heads.apply("txt_head", t, "text embeddings")
        return l2_normalize(t, "text embeddings")

    def coefficients(self) -> np.ndarray:
        """The composition is linear: q = I[src] + sum_j c_j T[text_j] with c = (-lambda, +lambda) for
        (value, target); :func:`~harness_plugins.simat.search.search_linear` uses this."""
        return np.array([-self.lambda_, self.lambda_], dtype=np.float32)

    def check(self, images: np.ndarray, texts: np.ndarray, queries: ComposedQueries) -> None:
        _check_inputs(images, texts, queries, self.text_roles)

    def compose(self, images: np.ndarray, texts: np.ndarray, queries: ComposedQueries) -> np.ndarray:
        """(nq, d) float32 query vectors from prepared (unit-norm) image and text embeddings."""
        _check_inputs(images, texts, queries, self.text_roles)
        value, target = queries.role("value"), queries.role("target")
        delta = texts[target] - texts[value]
        out = images[queries.source]
        out += np.float32(self.lambda_) * delta
        return out


class SumComposer:
    """A plain sum: q = I[src] + lambda T[modification] (unit-norm I and T), a baseline for CIRR-style data.

    ``lambda_`` weighs the text (``lambda`` is a Python keyword: the spec key is ``lambda_``).
    """

    version = "1"
    database_params: tuple[str, ...] = ()
    text_roles = ("modification",)

    def __init__(self, lambda_: float = 1.0) -> None:
        if not np.isfinite(lambda_):
            raise UserError(f"lambda_ must be a finite number (got {lambda_})")
        self.lambda_ = float(lambda_)

    def fingerprint(self) -> str:
        return "sum"

    def prepare_images(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(x, "image embeddings")

    def prepare_texts(self, t: np.ndarray) -> np.ndarray:
        return l2_normalize(t, "text embeddings")

    def coefficients(self) -> np.ndarray:
        return np.array([self.lambda_], dtype=np.float32)

    def check(self, images: np.ndarray, texts: np.ndarray, queries: ComposedQueries) -> None:
        _check_inputs(images, texts, queries, self.text_roles)

    def compose(self, images: np.ndarray, texts: np.ndarray, queries: ComposedQueries) -> np.ndarray:
        _check_inputs(images, texts, queries, self.text_roles)
        out = images[queries.source]
        out += np.float32(self.lambda_) * texts[queries.role("modification")]
        return out


def _check_inputs(images: Any, texts: Any, queries: ComposedQueries, roles: tuple[str, ...]) -> None:
    if tuple(queries.text_roles) != roles:
        raise UserError(f"composer: needs texts ({', '.join(roles)}) per query; the dataset gives "
                        f"({', '.join(queries.text_roles)})")
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise UserError(f"composer: image embeddings {images.shape} and text embeddings {texts.shape} "
                        "must have the same dimension (use an image and a text encoder of one model)")
    if len(texts) != len(queries.texts):
        raise UserError(f"composer: {len(texts)} text embeddings for {len(queries.texts)} texts")
    if len(queries) and (queries.source.min() < 0 or queries.source.max() >= len(images)):
        raise UserError("composer: a query's source row is outside the database")
