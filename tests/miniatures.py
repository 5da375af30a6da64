"""Miniature benchmarks written in the official on-disk layouts, for tests that must run offline.

Images are real JPEGs cut from scikit-image's bundled sample photographs (shipped inside the package,
no download), with geometric and colour variants, so that descriptors see natural image statistics
and copies are actually findable. Tests import this module as ``from miniatures import ...`` (pytest's
default import mode puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import csv
import math
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

#: Sample images bundled with scikit-image (no network). Queries without a match come from a pool
#: disjoint from the references', so they really have no copy in the database.
REFERENCE_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                     "camera", "coins", "moon", "clock", "brick")
OTHER_SOURCES = ("retina", "page", "text", "grass", "gravel", "cell")


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray:
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.dtype != np.uint8:
        a = (255 * (a.astype(np.float64) / max(float(a.max()), 1e-9))).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def natural_image(rng: np.random.Generator, sources: tuple[str, ...], size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A random crop of a sample photograph, resized to ``size`` (w, h), with a colour variant."""
    src = _source(sources[int(rng.integers(len(sources)))])
    h, w = src.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 0.7))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = src[y : y + side, x : x + side]
    crop = crop[..., rng.permutation(3)]  # colour variant: channel permutation
    gamma = rng.uniform(0.7, 1.4)
    crop = (255.0 * (crop / 255.0) ** gamma).astype(np.uint8)
    return Image.fromarray(crop).resize(size, Image.BILINEAR)


def copy_of(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A mild edited copy: crop, resize, brightness/contrast, slight blur (a findable DISC21-style query)."""
    w, h = image.size
    fx, fy = rng.uniform(0.8, 0.95, size=2)
    cw, ch = int(w * fx), int(h * fy)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch)).resize((int(w * rng.uniform(0.8, 1.2)), int(h * rng.uniform(0.8, 1.2))))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(0.7))
    return out


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=90)


# --- DISC21 -----------------------------------------------------------------------------------------


@dataclass
class Disc21Miniature:
    root: Path
    query_ids: list[str]
    reference_ids: list[str]
    train_ids: list[str]
    pairs: dict[str, str]  # query id -> reference id, matched queries only
    ground_truth: Path


def make_disc21(
    root: str | Path,
    n_queries: int = 12,
    n_matched: int = 6,
    n_references: int = 24,
    n_train: int = 16,
    layout: str = "official",
    seed: int = 0,
    split: str = "dev",
    shards: int = 2,
    header: bool = True,
) -> Disc21Miniature:
    """Write a DISC21 miniature under ``root``.

    ``layout="official"``: ``dev_queries/`` (or ``final_queries/``), ``references_0..shards-1/``,
    ``train_0..shards-1/``; ``"flat"``: ``queries/``, ``references/``, ``train/``. Ids follow the real
    forms (dev queries from ``Q00000``, final from ``Q50000``). ``<split>_ground_truth.csv`` lists every
    query (``Q00003,`` when unmatched), with the ``query_id,reference_id`` header unless ``header=False``.
    ``n_train=0`` writes no training set.
    """
    if layout not in ("official", "flat"):
        raise ValueError(f"layout must be 'official' or 'flat', got {layout!r}")
    if not 0 <= n_matched <= min(n_queries, n_references):
        raise ValueError("n_matched must be at most min(n_queries, n_references)")
    root = Path(root)
    rng = np.random.default_rng(seed)
    q0 = 0 if split == "dev" else 50000
    query_ids = [f"Q{q0 + i:05d}" for i in range(n_queries)]
    reference_ids = [f"R{i:06d}" for i in range(n_references)]
    train_ids = [f"T{i:06d}" for i in range(n_train)]

    def folder(kind: str, index: int, count: int) -> Path:
        if layout == "flat":
            return root / kind
        per_shard = max(1, math.ceil(count / shards))
        return root / f"{kind}_{index // per_shard}"

    references = {}
    for i, rid in enumerate(reference_ids):
        references[rid] = natural_image(rng, REFERENCE_SOURCES)
        _save(references[rid], folder("references", i, n_references) / f"{rid}.jpg")
    for i, tid in enumerate(train_ids):
        _save(natural_image(rng, REFERENCE_SOURCES + OTHER_SOURCES), folder("train", i, n_train) / f"{tid}.jpg")

    matched_q = rng.choice(n_queries, size=n_matched, replace=False)
    matched_r = rng.choice(n_references, size=n_matched, replace=False)
    pairs = {query_ids[q]: reference_ids[r] for q, r in zip(matched_q, matched_r)}
    qdir = root / ("queries" if layout == "flat" else f"{split}_queries")
    for qid in query_ids:
        image = copy_of(references[pairs[qid]], rng) if qid in pairs else natural_image(rng, OTHER_SOURCES)
        _save(image, qdir / f"{qid}.jpg")

    gt = root / f"{split}_ground_truth.csv"
    with open(gt, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if header:
            writer.writerow(["query_id", "reference_id"])
        writer.writerows([qid, pairs.get(qid, "")] for qid in query_ids)
    return Disc21Miniature(root, query_ids, reference_ids, train_ids, pairs, gt)


# --- Revisited Oxford / Paris -----------------------------------------------------------------------


@dataclass
class RevisitopMiniature:
    root: Path
    name: str
    gnd: dict  # the plain-data content of gnd_<name>.pkl
    gnd_path: Path
    distractors: Path | None = None  # revisitop1m folder: jpg/<sub>/<name>.jpg + revisitop1m.txt
    distractor_names: list[str] = field(default_factory=list)  # list order (relative paths, no .jpg)


def make_revisitop(
    root: str | Path,
    name: str = "roxford5k",
    n_db: int = 24,
    n_queries: int = 4,
    with_distractors: int = 0,
    seed: int = 0,
) -> RevisitopMiniature:
    """Write a revisitop miniature: ``root/gnd_<name>.pkl`` (plain data: dict with ``imlist``,
    ``qimlist``, ``gnd`` = list of {``bbx``: [x1, y1, x2, y2], ``easy``, ``hard``, ``junk``: 0-based
    indices into imlist}) and ``root/jpg/<image>.jpg`` for database and query images.

    Each query shows one landmark (a sample photograph) inside its ``bbx``, with clutter around it; its
    easy / hard / junk database images are views of that landmark of decreasing similarity; the rest
    of the database shows other content. ``with_distractors=N`` also writes N R1M-style distractors
    under ``root/revisitop1m/jpg/<a>/<b>/<hash>.jpg`` with the list ``root/revisitop1m/revisitop1m.txt``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    prefix = "oxford" if "oxford" in name else "paris"
    per_query = 3  # easy, hard, junk images per landmark
    if n_db < n_queries * per_query:
        raise ValueError(f"n_db must be at least {n_queries * per_query}")
    imlist = [f"{prefix}_{i:06d}" for i in range(n_db)]
    qimlist = [f"{prefix}_query_{i:03d}" for i in range(n_queries)]
    slots = rng.permutation(n_db)
    gnd = []
    landmarks = [REFERENCE_SOURCES[i % len(REFERENCE_SOURCES)] for i in range(n_queries)]
    used = set()
    for q, src in enumerate(landmarks):
        view = natural_image(rng, (src,), size=(72, 64))
        # The query: the landmark pasted into clutter; bbx marks where it is.
        canvas = natural_image(rng, OTHER_SOURCES, size=(128, 112))
        x1, y1 = int(rng.integers(4, 128 - 72 - 4)), int(rng.integers(4, 112 - 64 - 4))
        canvas.paste(view, (x1, y1))
        _save(canvas, root / "jpg" / f"{qimlist[q]}.jpg")
        easy, hard, junk = (int(s) for s in slots[q * per_query : (q + 1) * per_query])
        _save(copy_of(view, rng).resize((96, 80)), root / "jpg" / f"{imlist[easy]}.jpg")
        hard_view = ImageEnhance.Color(copy_of(view, rng)).enhance(0.3).rotate(15, expand=False)
        _save(hard_view.resize((96, 80)), root / "jpg" / f"{imlist[hard]}.jpg")
        _save(natural_image(rng, (src,)), root / "jpg" / f"{imlist[junk]}.jpg")
        used.update((easy, hard, junk))
        gnd.append({"bbx": [float(x1), float(y1), float(x1 + 72), float(y1 + 64)],
                    "easy": [easy], "hard": [hard], "junk": [junk]})
    for i in range(n_db):
        if i not in used:
            _save(natural_image(rng, OTHER_SOURCES), root / "jpg" / f"{imlist[i]}.jpg")

    content = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}
    gnd_path = root / f"gnd_{name}.pkl"
    gnd_path.write_bytes(pickle.dumps(content, protocol=2))  # our own plain data, like the real file
    mini = RevisitopMiniature(root, name, content, gnd_path)
    if with_distractors:
        folder = root / "revisitop1m"
        names = []
        for i in range(with_distractors):
            digest = f"{int(rng.integers(0, 2**62)):016x}"
            rel = f"{digest[0]}/{digest[1]}/{digest}"
            _save(natural_image(rng, REFERENCE_SOURCES + OTHER_SOURCES), folder / "jpg" / f"{rel}.jpg")
            names.append(rel)
        (folder / "revisitop1m.txt").write_text("".join(f"{n}.jpg\n" for n in names))
        mini.distractors, mini.distractor_names = folder, names
    return mini
