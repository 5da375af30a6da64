"""An offline copy-detection benchmark in the DISC21 layout, built on the fly.

Content: the colour and grey sample photographs that ship inside the scikit-image wheel (no download).
Each generated image is a *collage* of 2..4 pieces, a piece being a window of one photograph (random
position and scale, a quarter turn, a colour variant: duotone for grey photographs, channel swap or
tint for colour ones), so that every reference, distractor, training image and unmatched query is a
distinct composition even though the sources are few. Matched queries are AugLy copies of references
(``augly.disc21_like`` by default); unmatched queries are copies of collages that are not in the
references. Everything is drawn from generators derived from (seed, role, id): same parameters give
byte-identical files.

Written under ``<root>/<hash of parameters>/`` (root defaults to ``<harness cache>/demo-disc21``)::

    dev_queries/Q00000.jpg ...   references/R000000.jpg ...   train/T000000.jpg ...
    dev_ground_truth.csv         (query_id,reference_id; empty reference for unmatched queries)
    build.json                   (the parameters; its presence marks a complete build)

The folder is built in a temporary sibling and renamed into place, so a killed build leaves nothing
half-written; items, ground truth and fingerprint are then served by the real DISC21 reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.errors import UserError
from harness.params import PartParam
from harness.parts import apply_recorded

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from harness_plugins.disc21.dataset import Disc21Dataset

#: Bump when the generated content changes for the same parameters (it enters the folder hash).
BUILD_VERSION = "3"  # 3: per-query operation records (dev_query_operations.json)
MARKER = "build.json"
OPERATIONS = "dev_query_operations.json"  # what each query went through, for per-operation breakdowns
JPEG_QUALITY = 90

# scikit-image samples that load from the wheel without a download (checked on 0.22 .. 0.26).
_COLOR_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "colorwheel", "logo", "stereo_motorcycle")
_GRAY_SOURCES = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "page", "text")

_DEFAULT_TRANSFORM = {"name": "augly.disc21_like", "strength": 0.6, "min_ops": 1, "max_ops": 3}


def _default_root() -> Path:
    from harness.cache import default_cache_dir

    return default_cache_dir() / "demo-disc21"


@lru_cache(maxsize=1)
def _sources() -> tuple[tuple["Image.Image", bool], ...]:
    """(RGB image, is_grey) for every bundled sample, long side at most 768 px."""
    import skimage.data
    from PIL import Image

    out = []
    for name in _COLOR_SOURCES + _GRAY_SOURCES:
        try:
            a = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a sample missing from some skimage version: skip it
            continue
        if name == "stereo_motorcycle":
            a = a[0]  # left view only: the right one is a near-duplicate
        a = np.asarray(a)
        if a.ndim == 3 and a.shape[2] == 4:  # logo: composite over white
            alpha = a[..., 3:4].astype(np.float32) / 255.0
            a = (a[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
        grey = a.ndim == 2
        im = Image.fromarray(a.astype(np.uint8)).convert("RGB")
        if max(im.size) > 768:
            scale = 768 / max(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        out.append((im, grey))
    if len(out) < 8:
        raise UserError(f"demo dataset: only {len(out)} scikit-image sample images could be loaded (need 8)")
    return tuple(out)


_TURNS = (None, "ROTATE_90", "ROTATE_180", "ROTATE_270")


def _piece(rng: np.random.Generator, width: int, height: int) -> "Image.Image":
    """A window of one sample photograph, turned and recoloured, resized to (width, height)."""
    from PIL import Image

    sources = _sources()
    source, grey = sources[int(rng.integers(0, len(sources)))]
    turns = int(rng.integers(0, 4))
    out_w, out_h = (width, height) if turns % 2 == 0 else (height, width)  # size before the turn
    w_src, h_src = source.size
    frac = rng.uniform(0.3, 0.9)  # window side relative to the largest window of that aspect
    win_w = min(w_src, h_src * out_w / out_h) * frac
    win_h = win_w * out_h / out_w
    x0, y0 = rng.uniform(0, w_src - win_w), rng.uniform(0, h_src - win_h)
    box = (float(x0), float(y0), float(x0 + win_w), float(y0 + win_h))
    im = source.resize((out_w, out_h), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
    if turns:
        im = im.transpose(getattr(Image.Transpose, _TURNS[turns]))
    return _recolour(im, grey, rng)


def _recolour(im: "Image.Image", grey: bool, rng: np.random.Generator) -> "Image.Image":
    """Duotone for grey photographs (luminance mapped between two random colours); channel swap and
    tint for colour ones. Done with 256-entry lookup tables per channel."""
    from PIL import Image

    levels = np.arange(256, dtype=np.float64) / 255.0
    if grey:
        dark, light = rng.uniform(0, 110, size=3), rng.uniform(150, 255, size=3)
        luts = dark[:, None] + levels[None, :] * (light - dark)[:, None]
        channels = np.repeat(np.asarray(im.convert("L"))[..., None], 3, axis=2)
    else:
        order = rng.permutation(3) if rng.random() < 0.5 else np.arange(3)
        luts = rng.uniform(0.75, 1.25, size=3)[:, None] * levels[None, :] * 255.0
        channels = np.asarray(im)[..., order]
    tables = np.clip(luts, 0, 255).round().astype(np.uint8)
    return Image.fromarray(np.stack([tables[c][channels[..., c]] for c in range(3)], axis=2))


_ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3)


def collage(rng: np.random.Generator, size: int) -> "Image.Image":
    """A distinct image: 2..4 pieces in a random split layout, long side ``size``."""
    from PIL import Image

    aspect = _ASPECTS[int(rng.integers(0, len(_ASPECTS)))]
    w, h = (size, round(size / aspect)) if aspect >= 1 else (round(size * aspect), size)
    canvas = Image.new("RGB", (w, h))
    layout = int(rng.integers(0, 3))
    sx, sy = round(w * rng.uniform(0.35, 0.65)), round(h * rng.uniform(0.35, 0.65))
    if layout == 0:  # two halves, split vertically or horizontally
        boxes = [(0, 0, sx, h), (sx, 0, w, h)] if rng.random() < 0.5 else [(0, 0, w, sy), (0, sy, w, h)]
    elif layout == 1:  # one half and two quarters
        boxes = [(0, 0, sx, h), (sx, 0, w, sy), (sx, sy, w, h)]
    else:  # four quarters
        boxes = [(0, 0, sx, sy), (sx, 0, w, sy), (0, sy, sx, h), (sx, sy, w, h)]
    for x0, y0, x1, y1 in boxes:
        canvas.paste(_piece(rng, x1 - x0, y1 - y0), (x0, y0))
    return canvas


class DemoCopyDetection:
    """Offline DISC21-style copy detection built from scikit-image samples, queries made with AugLy."""

    version = "1"

    def __init__(
        self,
        root: str | None = None,
        n_references: int = 200,
        n_distractors: int = 800,
        n_queries: int = 400,
        n_matched: int = 200,
        n_train: int = 500,
        image_size: int = 256,
        seed: int = 0,
        transform: PartParam("transform") = _DEFAULT_TRANSFORM,
    ) -> None:
        """``n_references`` originals (copied by the matched queries, in turn) plus ``n_distractors``
        other images form ``references/``; ``n_queries`` queries of which ``n_matched`` copy an original;
        ``n_train`` training images; images have a long side of ``image_size``; ``transform`` makes the
        queries (an ``augly.*`` transform spec, default ``augly.disc21_like`` at strength 0.6)."""
        for name, value, low in (("n_references", n_references, 1), ("n_distractors", n_distractors, 0),
                                 ("n_queries", n_queries, 1), ("n_matched", n_matched, 0), ("n_train", n_train, 0),
                                 ("image_size", image_size, 32)):
            if value < low:
                raise UserError(f"demo dataset: {name} must be at least {low}, got {value}")
        if n_matched > n_queries:
            raise UserError(f"demo dataset: n_matched ({n_matched}) exceeds n_queries ({n_queries})")
        if n_references + n_distractors > 1_000_000 or n_queries > 50_000 or n_train > 1_000_000:
            raise UserError("demo dataset: sizes exceed the DISC21 id ranges (1M references/train, 50k queries)")
        if isinstance(transform, dict):  # constructed directly, not from a spec: resolve it here
            self.transform_spec = dict(transform)
            transform = _make_transform(self.transform_spec)
        else:  # created by the run from the spec's nested part
            self.transform_spec = getattr(transform, "harness_spec", None) or {"name": type(transform).__name__}
        self._transform = transform
        self.params = {
            "build_version": BUILD_VERSION, "n_references": n_references, "n_distractors": n_distractors,
            "n_queries": n_queries, "n_matched": n_matched, "n_train": n_train, "image_size": image_size,
            "seed": seed, "transform": self.transform_spec, "transform_version": getattr(self._transform, "version", None),
            "jpeg_quality": JPEG_QUALITY,
        }
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        self.base = Path(os.path.expanduser(root)) if root is not None else _default_root()
        self.path = self.base / f"v{BUILD_VERSION}-{digest}"
        self._reader: Disc21Dataset | None = None

    # --- served through the DISC21 reader --------------------------------------------------------------

    @property
    def reader(self) -> "Disc21Dataset":
        if self._reader is None:
            if not self.is_built():
                self.prepare()
            from harness_plugins.disc21.dataset import Disc21Dataset

            self._reader = Disc21Dataset(str(self.path), queries="dev")
        return self._reader

    def items(self, role: str):
        return self.reader.items(role)

    def ground_truth(self):
        return self.reader.ground_truth()

    def fingerprint(self) -> str:
        return self.reader.fingerprint()

    def operations(self, role: str) -> dict[str, list[dict]] | None:
        """Per query id, the AugLy operations that made it (recorded at build time)."""
        if role != "queries":
            return None
        self.reader  # noqa: B018 - builds the folder if needed
        return json.loads((self.path / OPERATIONS).read_text())

    # --- building ----------------------------------------------------------------------------------------

    def is_built(self) -> bool:
        marker = self.path / MARKER
        try:
            return json.loads(marker.read_text()) == self.params
        except (OSError, ValueError):
            return False

    def prepare(self, progress: Callable[[int], object] | None = None) -> None:
        """Build the folder unless a complete build with the same parameters is already there."""
        from harness.cache import fsync_dir
        from harness.workdirs import PrivateDir, sweep

        if self.is_built():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        prefix = f".tmp-{self.path.name}-"
        sweep(self.base, prefix, unlocked_age_s=6 * 3600)  # builds killed earlier (never a live one)
        with PrivateDir(self.base, prefix) as private:
            tmp = private.path
            build(tmp, self.params, self._transform, progress)
            if self.path.exists():  # a stale or foreign folder under our name: replace it
                if self.is_built():  # a concurrent build finished first
                    return
                shutil.rmtree(self.path, ignore_errors=True)  # a concurrent build may be removing it too
            try:
                os.replace(tmp, self.path)
            except OSError:
                if not self.is_built():  # else another process renamed its complete build first
                    raise
            fsync_dir(self.base)


def _make_transform(spec: dict) -> Callable[..., Any]:
    """The query transform from its spec mapping, found in the plugin registry and checked like any
    spec part (did-you-mean included)."""
    from harness.errors import PluginError
    from harness.params import check_params
    from harness.plugins import get_registry

    params = dict(spec)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"demo dataset: transform.name: expected a transform name, got {name!r}")
    try:
        factory = get_registry().get("transform", name).factory
    except PluginError as exc:
        raise UserError(f"demo dataset: transform.name: {exc}") from None
    clean, problems = check_params(factory, params)
    if problems:
        raise UserError(f"demo dataset: transform {name}: " + "; ".join(
            f"{p.param}: {p.message}" + (f" (did you mean {p.suggestion!r}?)" if p.suggestion else "") for p in problems))
    return factory(**clean)


def _save(image: "Image.Image", path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY)


def _fit(image: "Image.Image", max_side: int) -> "Image.Image":
    """Queries (screenshots, pads) can grow: cap their long side so descriptors stay cheap."""
    from PIL import Image

    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)


def build(out: Path, params: dict, transform: Callable[..., Any], progress: Callable[[int], object] | None = None) -> None:
    """Write the whole benchmark into ``out`` (an empty folder); the marker file is written last."""
    from harness.cache import fsync_tree
    from harness.rng import derive_rng

    seed, size = int(params["seed"]), int(params["image_size"])
    n_orig, n_dist = int(params["n_references"]), int(params["n_distractors"])
    n_q, n_m, n_t = int(params["n_queries"]), int(params["n_matched"]), int(params["n_train"])
    tick = progress or (lambda n: None)
    for folder in ("references", "dev_queries", "train"):
        (out / folder).mkdir()

    # Which reference ids are originals, and which query ids are matched: shuffled, as in DISC21.
    layout_rng = derive_rng(seed, "demo", "layout")
    n_refs = n_orig + n_dist
    original_rows = np.sort(layout_rng.permutation(n_refs)[:n_orig])
    matched_rows = np.sort(layout_rng.permutation(n_q)[:n_m])

    originals: dict[str, Image.Image] = {}
    original_set = set(original_rows.tolist())
    for i in range(n_refs):
        rid = f"R{i:06d}"
        image = collage(derive_rng(seed, "demo", "reference", rid), size)
        if i in original_set:
            originals[rid] = image
        _save(image, out / "references" / f"{rid}.jpg")
        tick(1)
    for i in range(n_t):
        tid = f"T{i:06d}"
        _save(collage(derive_rng(seed, "demo", "train", tid), size), out / "train" / f"{tid}.jpg")
        tick(1)

    original_ids = [f"R{i:06d}" for i in original_rows]
    match_of: dict[int, str] = {int(q): original_ids[j % n_orig] for j, q in enumerate(matched_rows)}
    rows = ["query_id,reference_id"]
    operations: dict[str, list[dict]] = {}
    for i in range(n_q):
        qid = f"Q{i:05d}"
        ref = match_of.get(i, "")
        # An unmatched query copies a collage that is nowhere in the references.
        source = originals[ref] if ref else collage(derive_rng(seed, "demo", "unmatched", qid), size)
        query, operations[qid] = apply_recorded(transform, source.copy(), derive_rng(seed, "demo", "query", qid),
                                                "transform")
        _save(_fit(query.convert("RGB"), 2 * size), out / "dev_queries" / f"{qid}.jpg")
        rows.append(f"{qid},{ref}")
        tick(1)

    (out / "dev_ground_truth.csv").write_text("\n".join(rows) + "\n")
    (out / OPERATIONS).write_text(json.dumps(operations, indent=0))
    (out / MARKER).write_text(json.dumps(params, sort_keys=True, indent=1))
    fsync_tree(out)  # files and folders reach the disk before the rename publishes the build
