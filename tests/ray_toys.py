"""Plugins for the Ray executor's tests: a dataset whose images carry their number in their first pixel,
and a descriptor that logs every batch it describes and kills its own process, once, on a given image
(a worker killed in the middle of a shard)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

import harness
from harness.parts import Item
from toy_plugins import MeanColor

OFFSETS = {"database": 0, "queries": 100, "train": 200}  # image number = offset + position in the role


class CodedDataset:
    """Random 32 x 32 PNG images; pixel (0, 0) holds the image's number (red channel). Even queries
    are noisy copies of the database image with the same position."""

    version = "1"

    def __init__(self, root: str, n_database: int = 24, n_queries: int = 6, n_train: int = 8) -> None:
        self.root = Path(root)
        self.counts = {"database": n_database, "queries": n_queries, "train": n_train}

    def prepare(self, progress=None) -> None:
        from PIL import Image

        if (self.root / "done").exists():
            return
        rng = np.random.default_rng(0)
        db = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(self.counts["database"])]
        for role, n in self.counts.items():
            (self.root / role).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if role == "queries" and i % 2 == 0:
                    a = np.clip(db[i].astype(int) + rng.integers(-8, 9, (32, 32, 3)), 0, 255).astype(np.uint8)
                else:
                    a = db[i].copy() if role == "database" else rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                a[0, 0] = (OFFSETS[role] + i, 0, 0)
                Image.fromarray(a).save(self.root / role / f"{role[0].upper()}{i:03d}.png")
        (self.root / "done").write_text("ok")

    def items(self, role: str) -> list[Item]:
        return [Item(p.stem, str(p)) for p in sorted((self.root / role).glob("*.png"))]

    def ground_truth(self) -> dict[str, str]:
        return {f"Q{i:03d}": f"D{i:03d}" for i in range(0, self.counts["queries"], 2)}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in sorted(self.root.glob("*/*.png")):
            h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()


class CrashOnce(MeanColor):
    """``mean_color_toy`` (the same vectors) that appends ``first-image-number pid`` to ``log`` after
    each batch, ``os._exit``s the first time it meets image number ``crash_at`` (the marker file then
    holds the dead process's id and how many batches the log held), and refuses image ``fail_at``
    with a user error."""

    version = "1"

    def __init__(self, log: str, marker: str, crash_at: int = -1, fail_at: int = -1, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.log, self.marker, self.crash_at, self.fail_at = log, marker, crash_at, fail_at

    def describe(self, images):
        numbers = [im.convert("RGB").getpixel((0, 0))[0] for im in images]
        if self.fail_at in numbers:
            raise harness.errors.UserError(f"image {self.fail_at}: refused by the test descriptor")
        if self.crash_at in numbers and not os.path.exists(self.marker):
            done = len(Path(self.log).read_text().splitlines()) if os.path.exists(self.log) else 0
            Path(self.marker).write_text(f"{os.getpid()} {done}")
            os._exit(1)  # a worker killed in the middle of its shard
        out = super().describe(images)
        with open(self.log, "a") as fh:
            fh.write(f"{numbers[0]} {os.getpid()}\n")
        return out


@harness.hookimpl
def register_datasets(register):
    register("coded", CodedDataset)


@harness.hookimpl
def register_descriptors(register):
    register("crash_once", CrashOnce)
