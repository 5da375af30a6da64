"""Batches of images of one size (tensors and ONNX inputs stack only for equal shapes)."""

from __future__ import annotations

from typing import Any, Sequence


def size_groups(images: Sequence[Any], batch_size: int, max_pixels: int | None = None) -> list[list[int]]:
    """Row indices grouped by PIL image size (first-appearance order), in chunks of at most
    ``batch_size`` images and, when given, ``max_pixels`` pixels (at least one image per chunk)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.size), []).append(i)
    out = []
    for (w, h), rows in groups.items():
        n = batch_size if max_pixels is None else max(1, min(batch_size, max_pixels // max(1, w * h)))
        out += [rows[s : s + n] for s in range(0, len(rows), n)]
    return out
