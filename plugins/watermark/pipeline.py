"""The watermark-robustness pipeline, written once:

dataset -> embed (marked copies, a key per image from the seed and its id) -> attack:marked and
attack:original (the cell's attack chain on the marked images AND on the unmarked originals, one
stage per chain prefix) -> detect (one detections table: image, cell, marked, raw score, p-value,
decoded bits) -> metric:<label> (detection metrics on the table; image-quality metrics on the
(original, marked) pairs).

The marked images do not depend on the attack, so every cell of a grid over attacks shares them;
the table of each cell is written beside the result document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.context import BuildContext, Items
from harness.errors import PluginError
from harness.parts import Field, Item, ItemList
from harness.rng import derive_rng
from harness.spec import Cell, PartSpec
from harness.stages import Stage

from .detections import Detection, Detections
from .quality import ImagePairs

CHUNK = 32  # images per embed / detect call: bounds memory, lets progress advance


def watermark_key(seed: int, image_id: str) -> int:
    """The key of an image: derived from the spec seed and the image id, the same in every process."""
    return int(derive_rng(seed, image_id, "watermark-key").integers(0, 2**31 - 1))


class WatermarkPipeline:
    """Watermark robustness: embed, attack marked and unmarked images alike, detect, score."""

    version = "1"
    fields = {
        "dataset": Field("part", "dataset", required=True),
        "role": Field("str", doc="the dataset role holding the images (default: database)"),
        "watermarker": Field("part", "watermarker", required=True),
        "attack": Field("chain", "transform", doc="applied to the marked and to the unmarked images (a grid axis)"),
        "metrics": Field("parts", "metric", required=True),
    }
    roles = ("database",)
    metric_input = ("detections", "image_pairs")

    def build(self, cell: Cell, ctx: BuildContext) -> dict[str, Stage]:
        data = ctx.dataset(cell.dataset)
        originals = data.items(cell.role or "database")
        assert originals is not None
        embed = _embed_stage(ctx, cell.watermarker, originals)
        marked = Items(embed.key, originals.ids, embed)
        chain = cell.attack or []
        attacked_marked = ctx.transformed(marked, chain, name="attack:marked") if chain else marked
        attacked_originals = ctx.transformed(originals, chain, name="attack:original") if chain else originals
        label = _cell_label(chain)
        detect = _detect_stage(ctx, cell.watermarker, embed, attacked_marked, attacked_originals, label)
        ctx.table("detections", detect, lambda table, path: table.save_csv(path))
        pairs_inputs = [embed, *originals.inputs()]
        return ctx.metrics(
            cell.metrics,
            {"detections": ([detect], None),
             "image_pairs": (pairs_inputs, lambda marked_items, *orig: _pairs(marked_items, originals.resolve(list(orig))))},
            None, reduce=_one_cell)


def _cell_label(chain: Sequence[PartSpec]) -> str:
    if not chain:
        return "none"
    return " > ".join(p.name + "(" + ", ".join(f"{k}={v}" for k, v in p.as_dict().items() if k != "name") + ")"
                      if len(p.params) else p.name for p in chain)


def _one_cell(result: dict[str, Any]) -> dict[str, Any]:
    """The watermark metrics answer per table cell ({cell: values}); a harness cell holds one."""
    if len(result) == 1 and isinstance(next(iter(result.values())), dict):
        return next(iter(result.values()))
    return result


def _pairs(marked: ItemList, originals: Sequence[Item]) -> ImagePairs:
    class Lazy:  # images are opened one at a time by the quality metrics
        def __init__(self, items: Sequence[Item]) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> Any:
            return self.items[i].load()

    return ImagePairs(np.array([it.id for it in originals]), "embed", Lazy(list(originals)), Lazy(list(marked)))


def _chunks(n: int, size: int = CHUNK) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def _embed_stage(ctx: BuildContext, spec: PartSpec, originals: Items) -> Stage:
    seed = ctx.seed

    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        marker = ctx.create(spec)
        its = originals.resolve(inputs)
        keys = [watermark_key(seed, it.id) for it in its]
        (work / "images").mkdir()
        batch = getattr(marker, "embed_batch", None)
        with ctx.reporter.task(f"embed ({spec.name})", len(its)) as advance:
            for rows in _chunks(len(its)):
                images = [its[i].load() for i in rows]
                ks = [keys[i] for i in rows]
                out = batch(images, ks) if callable(batch) else [marker.embed(im, k) for im, k in zip(images, ks)]
                if len(out) != len(images):
                    raise PluginError(f"watermarker {spec.name!r} returned {len(out)} images for {len(images)}")
                for i, image, original in zip(rows, out, images):
                    if image.size != original.size:
                        raise PluginError(f"watermarker {spec.name!r} changed the size of {its[i].id!r}")
                    image.convert("RGB").save(work / "images" / f"{i:08d}.png", format="PNG", compress_level=1)
                advance(len(rows))
        (work / "ids.json").write_text(json.dumps([it.id for it in its]))
        (work / "keys.json").write_text(json.dumps(keys))
        return {"items": len(its)}

    def load(entry: Path, _inputs: Any) -> ItemList:
        ids = json.loads((entry / "ids.json").read_text())
        items = ItemList.of([Item(i, str(entry / "images" / f"{n:08d}.png")) for n, i in enumerate(ids)],
                            [[{"op": "embed"}] for _ in ids])
        items.keys = json.loads((entry / "keys.json").read_text())  # type: ignore[attr-defined]
        return items

    config = {"items": originals.key if originals.stage is None else None, "watermarker": ctx.identity(spec), "seed": seed}
    return ctx.engine.stage("embed", config, originals.inputs(), compute, load)


class CellDetections(Detections):
    """A cell's detections with, per row, the operations its image went through (for breakdowns)."""

    operations: list[list[dict[str, Any]]] | None = None

    def groups(self) -> dict[str, np.ndarray]:
        if self.operations is None:
            return {}
        names = [sorted({str(op.get("op")) for op in ops if op.get("op") != "embed"}) or ["none"] for ops in self.operations]
        return {g: np.array([g in ns for ns in names]) for g in sorted({n for ns in names for n in ns})}

    def subset(self, mask: np.ndarray) -> Detections:
        return self.take(np.flatnonzero(mask))


def _detect_stage(ctx: BuildContext, spec: PartSpec, embed: Stage, marked: Items, originals: Items, label: str) -> Stage:
    def compute(work: Path, inputs: list[Any]) -> dict[str, Any]:
        marker = ctx.create(spec)
        embedded, rest = inputs[0], inputs[1:]
        n_marked_inputs = len(marked.inputs()) if marked.stage is not embed else 0
        marked_items = marked.resolve(rest[:n_marked_inputs]) if n_marked_inputs else embedded
        original_items = originals.resolve(rest[n_marked_inputs:])
        keys = list(embedded.keys)
        message = getattr(marker, "message", None)
        messages = [message(k) for k in keys] if callable(message) else None
        # marked and unmarked images in one pass: twice the images of each size per batch
        found = _detect(ctx, marker, spec.name, [*marked_items, *original_items], keys + keys, "marked and unmarked")
        n = len(marked_items)
        table = Detections.concat([Detections.build([it.id for it in marked_items], label, True, found[:n], messages),
                                   Detections.build([it.id for it in original_items], label, False, found[n:], messages)])
        table.save_npz(work / "detections.npz")
        ops = [*(getattr(marked_items, "operations", None) or [[]] * len(marked_items)),
               *(getattr(original_items, "operations", None) or [[]] * len(original_items))]
        (work / "operations.json").write_text(json.dumps(ops, default=str))
        return {"rows": len(table)}

    def load(entry: Path, _inputs: Any) -> CellDetections:
        table = Detections.load_npz(entry / "detections.npz")
        out = CellDetections(*(getattr(table, n) for n in ("image_id", "cell", "marked", "score", "p_value", "bits", "message")))
        out.operations = json.loads((entry / "operations.json").read_text())
        return out

    inputs = [embed, *(marked.inputs() if marked.stage is not embed else []), *originals.inputs()]
    return ctx.engine.stage("detect", {"watermarker": ctx.identity(spec), "cell": label}, inputs, compute, load)


def _detect(ctx: BuildContext, marker: Any, name: str, items: Sequence[Item], keys: list[int], what: str) -> list[Detection]:
    batch = getattr(marker, "detect_batch", None)
    found: list[Any] = []
    with ctx.reporter.task(f"detect {what} ({name})", len(items)) as advance:
        for rows in _chunks(len(items)):
            images = [items[i].load() for i in rows]
            ks = [keys[i] for i in rows]
            found += batch(images, ks) if callable(batch) else [marker.detect(im, k) for im, k in zip(images, ks)]
            advance(len(rows))
    return [d if isinstance(d, Detection) else _as_detection(d, name) for d in found]


def _as_detection(value: Any, name: str) -> Detection:
    """The minimal contract allows a float score or (score, bits)."""
    if isinstance(value, (int, float, np.floating, np.integer)):
        return Detection(float(value))
    if isinstance(value, tuple) and len(value) == 2:
        return Detection(float(value[0]), np.asarray(value[1], dtype=np.uint8))
    raise PluginError(f"watermarker {name!r}: detect returned {type(value).__name__}, expected a Detection")
