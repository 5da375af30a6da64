"""Batches of images of one size (tensors and ONNX inputs stack only for equal shapes)."""

from __future__ import annotations

from typing import Any, Sequence


def size_groups(images: Sequence[Any], batch_size: int) -> list[list[int]]:
    """Row indices grouped by PIL image size (first-appearance order), in chunks of ``batch_size``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.size), []).append(i)
    return [rows[s : s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]
