"""Helpers shared by dataset plugins read from disk: image extensions, listing without GC churn, and
the fingerprint of served items. Light imports only (the CLI imports plugins at start-up)."""

from __future__ import annotations

import gc
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from harness.parts import Item

#: File name endings (compared lower-cased) that count as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a million small objects (which create no
    cycles): otherwise it runs again and again over them, doubling the listing time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fingerprint_items(
    header: str,
    roles: Mapping[str, Sequence[Item]],
    gt_path: Path | None,
    extra: str | None = None,
) -> str:
    """sha256 over ``header``, (role, id, file size, bbox) of every item, ``extra`` and the GT file's bytes.

    File sizes come from one ``stat`` per file, not from reading the images: hashing millions of JPEGs
    would take hours, and a replaced image almost always changes size. Paths are left out so that moving
    the data does not invalidate the cache. A missing GT file hashes as ``<none>``."""
    h = hashlib.sha256(f"{header}\n".encode())
    for role, items in roles.items():
        h.update(f"{role}\t{len(items)}\n".encode())
        h.update("".join(f"{it.id}\t{os.stat(it.path).st_size}\t{it.bbox}\n" for it in items).encode())
    if extra is not None:
        h.update(b"extra\n" + extra.encode() + b"\n")
    h.update(b"gt\n" + (gt_path.read_bytes() if gt_path is not None and gt_path.is_file() else b"<none>"))
    return h.hexdigest()
