"""Watermark detection over an attack grid, end to end as a user runs it: ``harness run`` of a watermark
spec (SSL watermarking, the paper's 66-attack grid by default) against a per-image loop in the style of
ssl_watermarking's evaluate.py over the same marked and unmarked images, then the cached re-run.

The harness side is a real run in a fresh cache: the image folder -> embed -> per cell, the attack on
the marked and on the unmarked images (an attack stage each) -> detect (batched: images of one size
together) -> metrics. Its detection throughput is (marked + unmarked) x cells images over the seconds
of its attack and detect stages, read from the result document's stage records (embedding, done once
by both sides, is reported apart).

The baseline does what evaluate.py's ``evaluate_0bit_on_attacks`` + ``decode.decode_0bit`` do, on the
harness's own marked images (read from the run's cache) and the originals: for each image, every
attack (the same attack parts, so the same attacked pixels), then per attacked image ToTensor +
normalise, one forward pass of one image through the network in torch's default layout with
``requires_grad`` off (as main_0bit.py sets it), |cos| to the carrier and the hypercone p-value.

The script checks that both sides give the same score and p-value for every (image, cell, marked)
row, prints the ratio, and exits 1 if they disagree. Random-initialised backbone (labelled); nothing is
downloaded.

    python benchmarks/bench_watermark_grid.py                                    # resnet50, 4 images of 512 px, 66 attacks
    python benchmarks/bench_watermark_grid.py --model resnet18 --size 256 --images 4
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timed_harness import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GRID = REPO / "specs" / "grids" / "ssl-watermarking.yaml"


def write_images(folder: Path, n: int, size: int) -> None:
    from harness.testing import sample_images

    folder.mkdir(parents=True)
    for i, im in enumerate(sample_images(n, size)):
        im.save(folder / f"img{i:03d}.png")


def write_spec(path: Path, images: Path, grid: Path, model: str, steps: int, batch_size: int) -> None:
    spec = {
        "task": "bench-watermark-grid",
        "seed": 0,
        "pipeline": "watermark",
        "dataset": {"name": "image_folder", "root": str(images)},
        "role": "images",
        "watermarker": {"name": "ssl", "model": model, "bits": 0, "fpr": 1e-6, "psnr": 42.0, "steps": steps,
                        "batch_size": batch_size, "device": "cpu"},
        "attack": [{"name": "attack.none"}],
        "metrics": [{"name": "watermark.tpr", "fpr": [1e-6]}, {"name": "watermark.auroc"}],
        "grid": [{"attack": {"values_from": str(grid)}}],
    }
    import yaml

    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def grid_attacks(spec: Path) -> list[tuple[str, list]]:
    """(cell label as the pipeline writes it, created attack parts) for each cell of the spec, read by
    the harness's own spec loader (same parameters, same labels as the run)."""
    from harness.plugins import get_registry
    from harness.spec import load_spec
    from harness_plugins.watermark.pipeline import _cell_label

    registry = get_registry()
    out = []
    for cell in load_spec(spec, registry=registry).cells:
        chain = cell.attack or []
        out.append((_cell_label(chain), [registry.create("transform", p.name, dict(p.params)) for p in chain]))
    return out


def stage_seconds(doc: dict) -> dict[str, float]:
    """Seconds of the computed stages by kind: embed, attack (per-cell transform stages), detect."""
    out = {"embed": 0.0, "attack": 0.0, "detect": 0.0, "other": 0.0}
    for rec in doc["stages"]:
        if rec.get("status") != "computed":
            continue
        name = rec["stage"]
        kind = "embed" if name.startswith("embed") else "detect" if name.startswith("detect") else \
            "attack" if name.startswith("attack:") else "other"
        out[kind] += float(rec.get("seconds") or 0.0)
    return out


def harness_rows(doc: dict, result_dir: Path) -> dict[tuple[str, str, bool], tuple[float, float]]:
    """(image id, cell, marked) -> (score, p-value) from the run's detections tables (CSV)."""
    rows = {}
    for table in doc.get("tables", []):
        if table.get("name") != "detections":
            continue
        path = Path(table["path"])
        path = path if path.is_absolute() else result_dir / path
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows[(r["image_id"], r["cell"], r["marked"] in ("1", "True", "true"))] = (float(r["score"]), float(r["p_value"]))
    return rows


def reference_loop(marker, model, images, keys, attacks):
    """evaluate.py's structure: per image, all attacked versions, then one forward per attacked image."""
    import torch
    from scipy.special import betainc

    mean, std = marker._norm_consts()
    rng = np.random.default_rng(0)  # exact attacks ignore it
    out = []
    for im, key in zip(images, keys):
        carrier = torch.from_numpy(np.array(marker.carriers(key))).double()  # (1, D)
        attacked = [_apply(parts, im, rng) for _, parts in attacks]
        for (label, _), a in zip(attacks, attacked):
            x = torch.from_numpy(np.asarray(a.convert("RGB"), dtype=np.float32).transpose(2, 0, 1).copy()) / 255.0
            ft = model(((x.unsqueeze(0) - mean) / std)).double()
            dot = (ft @ carrier.T).squeeze()
            cos = float(torch.abs(dot / torch.norm(ft, dim=-1)))
            out.append((label, cos, float(betainc((ft.shape[-1] - 1) / 2.0, 0.5, 1 - cos**2))))
    return out


def _apply(parts, image, rng):
    for p in parts:
        image = p(image, rng)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="SSL marking steps (embedding is not what is compared)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grid", type=Path, default=DEFAULT_GRID)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import copy

    import torch
    from PIL import Image

    from harness.cache import Cache
    from harness_plugins.watermark.pipeline import watermark_key
    from harness_plugins.watermark.ssl import SSLWatermarker

    with tempfile.TemporaryDirectory(prefix="bench-wm-grid-") as tmp:
        tmp_path = Path(tmp)
        write_images(tmp_path / "images", args.images, args.size)
        spec = tmp_path / "spec.yaml"
        write_spec(spec, tmp_path / "images", args.grid.resolve(), args.model, args.steps, args.batch_size)
        cache = str(tmp_path / "cache")
        out_dir = tmp_path / "results"
        cold_s, doc = harness(["run", str(spec), "--output", str(out_dir)], cache)
        rerun_s, doc2 = harness(["run", str(spec), "--output", str(out_dir)], cache)
        recomputed = [r["stage"] for r in doc2["stages"] if r.get("status") == "computed"]
        seconds = stage_seconds(doc)
        got = harness_rows(doc, out_dir)

        # the baseline, on the run's own marked images and the originals
        embed_rec = next(r for r in doc["stages"] if r["stage"].startswith("embed"))
        entry = Cache(cache).lookup(embed_rec["key"])
        ids = json.loads((entry / "ids.json").read_text())
        marked = [Image.open(entry / "images" / f"{n:08d}.png").convert("RGB") for n in range(len(ids))]
        originals = [Image.open(tmp_path / "images" / f"{i}.png").convert("RGB") for i in ids]
        keys = [watermark_key(0, i) for i in ids]
        marker = SSLWatermarker(model=args.model, device="cpu", steps=args.steps)
        marker.dim
        model = copy.deepcopy(marker.backbone.model).to(memory_format=torch.contiguous_format).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        attacks = grid_attacks(spec)
        model(marker._to_tensor(originals[:1]))  # warm-up
        start = time.perf_counter()
        ref_marked = reference_loop(marker, model, marked, keys, attacks)
        ref_unmarked = reference_loop(marker, model, originals, keys, attacks)
        ref_s = time.perf_counter() - start

    n_att = len(attacks)
    ref = {}
    for is_marked, rows in ((True, ref_marked), (False, ref_unmarked)):
        for n, (label, cos, p) in enumerate(rows):
            ref[(ids[n // n_att], label, is_marked)] = (cos, p)
    missing = sorted(set(ref) ^ set(got))
    common = sorted(set(ref) & set(got))
    score_diff = max(abs(ref[k][0] - got[k][0]) for k in common) if common else float("nan")
    p_rel = max(abs(ref[k][1] - got[k][1]) / max(ref[k][1], 1e-300) for k in common) if common else float("nan")
    detections = len(ref)
    harness_s = seconds["attack"] + seconds["detect"]
    figures = {
        "model": f"{args.model} (random_init)", "image_size": args.size, "images": args.images, "cells": n_att,
        "detections": detections, "threads": torch.get_num_threads(),
        "reference_s": round(ref_s, 2), "harness_attack_s": round(seconds["attack"], 2),
        "harness_detect_s": round(seconds["detect"], 2), "harness_embed_s": round(seconds["embed"], 2),
        "harness_run_cold_s": round(cold_s, 2), "harness_rerun_s": round(rerun_s, 2),
        "rerun_recomputed_stages": recomputed,
        "reference_images_per_s": round(detections / ref_s, 2), "harness_images_per_s": round(detections / harness_s, 2),
        "ratio": round(ref_s / harness_s, 2), "rows_only_one_side": len(missing),
        "max_abs_score_diff": score_diff, "max_rel_p_value_diff": p_rel,
    }
    if missing:
        print(f"rows on one side only, e.g. {missing[:3]}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{detections} detections ({args.images} images of {args.size} px, marked and unmarked, x {n_att} attack cells), "
              f"{args.model} random_init, {figures['threads']} threads")
        print(f"  evaluate.py-style loop (attack + detect)  : {ref_s:7.2f} s  ({figures['reference_images_per_s']} images/s)")
        print(f"  harness run: attack + detect stages        : {harness_s:7.2f} s  ({figures['harness_images_per_s']} images/s)"
              f"  [attack {seconds['attack']:.2f} s, detect {seconds['detect']:.2f} s]")
        print(f"  ratio                                      : {figures['ratio']:.2f}x  (goal >= 2x)")
        print(f"  harness run, cold (incl. embed {seconds['embed']:.2f} s, start-up, metrics): {cold_s:.2f} s; "
              f"cached re-run: {rerun_s:.2f} s, stages recomputed: {len(recomputed)}")
        print(f"  scores: max |diff| {score_diff:.2e}, p-values max rel diff {p_rel:.2e}, rows on one side only: {len(missing)}")
    if missing or not score_diff <= 1e-5:
        print(f"error: the two paths disagree ({len(missing)} unmatched rows, max score diff {score_diff})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
