"""A tiny, complete plugin used by the core tests: no torch, no faiss, so the runner is tested alone.

Dataset: queries are flipped/brightened copies of some database images; GT maps query -> database id.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

import harness
from harness.parts import Item, Neighbors


class ToyDataset:
    """Sample images written as JPEG; half the queries have a match."""

    version = "1"

    def __init__(self, root: str, n_database: int = 12, n_queries: int = 6, train: bool = True) -> None:
        self.root = Path(root)
        self.n_database, self.n_queries, self.with_train = n_database, n_queries, train

    def prepare(self, progress=None) -> None:
        from PIL import ImageOps

        from harness.testing import sample_images

        if (self.root / "done").exists():
            return
        images = sample_images(self.n_database + self.n_queries + 8, 64)
        db = images[: self.n_database]
        others = images[self.n_database :]
        for i, im in enumerate(db):
            self._save(im, "database", f"D{i:03d}")
        for i in range(self.n_queries):
            im = ImageOps.mirror(db[i]) if i % 2 == 0 else others[i]
            self._save(im, "queries", f"Q{i:03d}")
        for i, im in enumerate(others[-8:]):
            self._save(im, "train", f"T{i:03d}")
        (self.root / "done").write_text("ok")

    def _save(self, image, folder: str, id_: str) -> None:
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        image.save(self.root / folder / f"{id_}.jpg", quality=95)

    def items(self, role: str) -> list[Item]:
        if role == "train" and not self.with_train:
            raise KeyError(role)
        folder = self.root / role
        return [Item(p.stem, str(p)) for p in sorted(folder.glob("*.jpg"))]

    def ground_truth(self) -> dict[str, str]:
        return {f"Q{i:03d}": f"D{i:03d}" for i in range(0, self.n_queries, 2)}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for role in ("queries", "database", "train"):
            for p in sorted((self.root / role).glob("*.jpg")):
                h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()


class MeanColor:
    """Mean RGB over a g x g grid (mirror-invariant when symmetric=True)."""

    version = "1"

    def __init__(self, grid: int = 2, symmetric: bool = True, delay: float = 0.0) -> None:
        self.grid, self.symmetric, self.delay = grid, symmetric, delay

    def describe(self, images):
        out = []
        for im in images:
            if self.delay:
                time.sleep(self.delay)
            a = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
            if self.symmetric:
                a = (a + a[:, ::-1]) / 2
            g = self.grid
            cells = a.reshape(g, 32 // g, g, 32 // g, 3).mean(axis=(1, 3))
            out.append(cells.ravel())
        return np.stack(out).astype(np.float32)


class Center:
    """Subtract the training mean (needs training)."""

    version = "1"

    def __init__(self) -> None:
        self.mean = None

    def fit(self, train):
        if train is None:
            raise harness.errors.UserError("center needs a train split")
        self.mean = train.mean(axis=0)

    def apply(self, x, role):
        return x - self.mean


class BruteForce:
    """Exact L2 kNN in numpy."""

    version = "1"

    def __init__(self, k: int = 3) -> None:
        self.k = k
        self.db = None

    def train(self, x):
        pass

    def add(self, x):
        self.db = np.asarray(x)

    def search(self, queries):
        d = ((queries[:, None, :] - self.db[None, :, :]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")[:, : self.k]
        return Neighbors.knn(order, -np.take_along_axis(d, order, axis=1))


class RecallAt:
    """Fraction of matched queries whose match is within the top k."""

    protocol = "toy-recall"
    version = "1"

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def __call__(self, ground_truth, retrieval):
        qids, rids, scores = retrieval.predictions()
        ranks = retrieval.rankings()[: self.k]
        hits = 0
        for j, q in enumerate(retrieval.query_ids):
            if q in ground_truth and ground_truth[q] in set(retrieval.db_ids[ranks[:, j][ranks[:, j] >= 0]]):
                hits += 1
        return {f"recall@{self.k}": hits / len(ground_truth), "n_predictions": len(qids)}


class Mirror:
    """Mirror the image with probability p."""

    version = "1"

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, rng):
        from PIL import ImageOps

        return ImageOps.mirror(image) if rng.random() < self.p else image.copy()


@harness.hookimpl
def register_datasets(register):
    register("toy", ToyDataset)


@harness.hookimpl
def register_descriptors(register):
    register("mean_color_toy", MeanColor)


@harness.hookimpl
def register_postprocessors(register):
    register("center", Center)


@harness.hookimpl
def register_indexes(register):
    register("brute", BruteForce)


@harness.hookimpl
def register_metrics(register):
    register("recall_at", RecallAt)


@harness.hookimpl
def register_transforms(register):
    register("mirror", Mirror)


def spec(root: str, **changes) -> dict:
    base = {
        "task": "toy",
        "dataset": {"name": "toy", "root": root},
        "descriptor": {"name": "mean_color_toy"},
        "postprocess": [{"name": "center"}],
        "index": {"name": "brute", "k": 3},
        "metrics": [{"name": "recall_at", "k": 1}, {"name": "recall_at", "k": 3}],
        "extraction": {"workers": 1},
    }
    base.update(changes)
    return base
