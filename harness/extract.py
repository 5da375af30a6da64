"""Descriptor extraction over a list of items: batched, with parallel image decoding.

Two paths, chosen by what the descriptor offers (see :mod:`harness.parts`):

- batched descriptors (``preprocess`` + ``forward``): a torch DataLoader whose worker processes load
  and preprocess images while the main process runs ``forward`` on the previous batch;
- minimal descriptors (``describe`` only): images decoded by a thread pool (PIL releases the GIL while
  decoding), ``describe`` called per batch.

The batch size is the run's (``extraction.batch_size``, else 32) unless the descriptor offers
``extraction_batch_size(configured)``, which then decides (e.g. its own setting per device).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from harness.errors import UserError
from harness.parts import Item


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


DEFAULT_BATCH_SIZE = 32


def batch_size_of(descriptor: Any, configured: int | None) -> int:
    """Items per batch: the descriptor's ``extraction_batch_size(configured)`` when it offers one, else
    ``configured`` (the run's setting), else :data:`DEFAULT_BATCH_SIZE`."""
    choose = getattr(descriptor, "extraction_batch_size", None)
    if callable(choose):
        n = choose(configured)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UserError(f"descriptor chose batch size {n!r}: expected a positive integer")
        return int(n)
    return DEFAULT_BATCH_SIZE if configured is None else int(configured)


def is_batched(descriptor: Any) -> bool:
    return callable(getattr(descriptor, "preprocess", None)) and callable(getattr(descriptor, "forward", None))


def extract(
    descriptor: Any,
    items: Sequence[Item],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Describe ``items`` in order; returns float32 (len(items), d). ``batch_size``: the run's setting
    (None: unset), which the descriptor may override (:func:`batch_size_of`)."""
    batch_size = batch_size_of(descriptor, batch_size)
    workers = default_workers() if workers is None else workers
    advance = progress or (lambda n: None)
    if len(items) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if is_batched(descriptor):
        chunks = _batched(descriptor, items, batch_size, workers, advance)
    else:
        chunks = _plain(descriptor, items, batch_size, workers, advance)
    out = np.concatenate(chunks, axis=0)
    if out.shape[0] != len(items):
        raise UserError(f"descriptor returned {out.shape[0]} rows for {len(items)} images")
    return out


@dataclass
class Describe:
    """``describe(items, advance)``: :func:`extract` as one picklable object, the computation of a
    shard that an executor may send to other processes (a Ray actor receives it once)."""

    descriptor: Any
    batch_size: int | None = None  # the run's setting; None: the descriptor's own (see batch_size_of)
    workers: int | None = None

    def __call__(self, items: Sequence[Item], advance: Callable[[int], None]) -> np.ndarray:
        return extract(self.descriptor, items, batch_size=self.batch_size, workers=self.workers, progress=advance)


def _check(batch_out: Any, n: int) -> np.ndarray:
    arr = np.asarray(batch_out)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise UserError(f"descriptor must return an array of shape ({n}, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise UserError("descriptor returned NaN or inf values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _plain(descriptor: Any, items: Sequence[Item], batch_size: int, workers: int, advance) -> list[np.ndarray]:
    chunks = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        # decode the next batch while the current one is described
        pending = pool.map(lambda it: it.load(), batches[0]) if batches else None
        for i, batch in enumerate(batches):
            images = list(pending)
            if i + 1 < len(batches):
                pending = pool.map(lambda it: it.load(), batches[i + 1])
            chunks.append(_check(descriptor.describe(images), len(batch)))
            advance(len(batch))
    return chunks


class _ItemDataset:
    """torch map-style dataset: item -> preprocessed tensor (runs in loader workers)."""

    def __init__(self, items: Sequence[Item], preprocess: Callable[[Any], Any]) -> None:
        self.items = list(items)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.preprocess(self.items[i].load())


def _batched(descriptor: Any, items: Sequence[Item], batch_size: int, workers: int, advance) -> list[np.ndarray]:
    import torch
    from torch.utils.data import DataLoader

    # a descriptor may bring its own collate (e.g. a list of differently sized tensors for aspect-preserving
    # resizes, which the default collate cannot stack)
    loader = DataLoader(
        _ItemDataset(items, descriptor.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        collate_fn=getattr(descriptor, "collate", None),
    )
    chunks = []
    start = 0
    with torch.inference_mode():
        try:
            for batch in loader:
                n = min(batch_size, len(items) - start)  # batches arrive in order, all full but the last
                chunks.append(_check(descriptor.forward(batch), n))
                start += n
                advance(n)
        except Exception as exc:
            raise _unwrap_worker_error(exc) from None
    return chunks


def _unwrap_worker_error(exc: Exception) -> Exception:
    """torch re-raises a loader worker's exception with the worker's whole traceback as its message;
    keep the original last line, so a bad image stays one clear line for the CLI."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = text.strip().splitlines()[-1]
    message = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(exc, UserError) or "UserError" in last:
        return UserError(message)
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an exception type that needs other arguments: keep it whole
        return exc
