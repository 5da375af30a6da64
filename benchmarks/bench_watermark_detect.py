"""Watermark detection over an attack grid: the harness's batched detection vs a per-image loop in
the style of ssl_watermarking's evaluate.py (same images, same attacked images, same method).

The baseline does what the reference evaluation does: for each image, make its attacked versions,
then for each one ToTensor + normalise, a forward pass of one image, and the hypercone p-value from
scipy per image. The harness path attacks the same images with the same functions, then calls
``SSLWatermarker.detect_batch`` once on everything (images of one size batched; on the CPU the network
runs on onnxruntime, ``--detector torch`` for torch eager in channels-last layout; the baseline runs a
copy of the same weights in torch's default layout, as the reference does). The end-to-end version
of this comparison, a real ``harness run`` of a grid, is bench_watermark_grid.py.
Both report the same scores (|cos| to the key's carrier) and p-values: the script checks they agree
and prints the ratio of wall times. Random-initialised backbone (labelled), no download.

    python benchmarks/bench_watermark_detect.py                       # resnet50, 10 images of 512 px, 7 attacks
    python benchmarks/bench_watermark_detect.py --model resnet18 --size 256 --images 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def attacks():
    """(label, function) on PIL images: the reference's kinds, a few parameters each."""
    import io

    import torchvision.transforms.functional as TF
    from PIL import Image

    def jpeg(im, q=50):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    def center_crop(im, area=0.5):
        s = area**0.5
        return TF.center_crop(im, [int(im.size[1] * s), int(im.size[0] * s)])

    def resize(im, area=0.5):
        s = area**0.5
        return TF.resize(im, [int(im.size[1] * s), int(im.size[0] * s)])

    return [
        ("none", lambda im: im),
        ("jpeg(quality=50)", jpeg),
        ("rotation(degrees=25)", lambda im: TF.rotate(im, 25)),
        ("center_crop(area=0.5)", center_crop),
        ("resize(area=0.5)", resize),
        ("blur(kernel=5)", lambda im: TF.gaussian_blur(im, 5)),
        ("brightness(factor=1.5)", lambda im: TF.adjust_brightness(im, 1.5)),
    ]


def reference_model(marker):
    """The same weights in torch's default (contiguous NCHW) layout, as the reference runs them."""
    import copy

    import torch

    return copy.deepcopy(marker.backbone.model).to(memory_format=torch.contiguous_format)


def reference_loop(model, marker, images, keys, grid):
    """Per image: attacked versions, then one forward per attacked image (evaluate.py's structure)."""
    import torch
    from scipy.special import betainc

    mean, std = marker._norm_consts()
    rows = []
    for im, key in zip(images, keys):
        carrier = torch.from_numpy(np.array(marker.carriers(key))).float()  # (1, D)
        attacked = [fn(im) for _, fn in grid]
        for (label, _), a in zip(grid, attacked):
            x = torch.from_numpy(np.asarray(a, dtype=np.float32).transpose(2, 0, 1).copy()) / 255.0
            x = ((x.unsqueeze(0) - mean) / std)
            ft = model(x)
            dot = (ft.double() @ carrier.double().T).squeeze()
            norm = torch.norm(ft.double(), dim=-1)
            cos = float(torch.abs(dot / norm))
            rows.append((label, cos, float(betainc((ft.shape[-1] - 1) / 2.0, 0.5, 1 - cos**2))))
    return rows


def harness_batched(marker, images, keys, grid):
    attacked, labels, akeys = [], [], []
    for label, fn in grid:
        for im, key in zip(images, keys):
            attacked.append(fn(im))
            labels.append(label)
            akeys.append(key)
    dets = marker.detect_batch(attacked, akeys)
    return labels, dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="alternating timed runs of each path (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--detector", default="auto", choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from harness.testing import sample_images
    from harness_plugins.watermark.ssl import SSLWatermarker

    marker = SSLWatermarker(model=args.model, device="cpu", batch_size=args.batch_size, detector=args.detector)
    images = sample_images(args.images, args.size)
    keys = list(range(1, args.images + 1))
    grid = attacks()
    marker.dim  # build the model before timing
    ref_model = reference_model(marker)
    with torch.inference_mode():
        ref_model(marker._to_tensor(images[:1]))  # warm-up of both
    marker.detect_features(images[:1])  # (and the onnxruntime export, outside the timing)

    t_ref, t_batched = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ref = reference_loop(ref_model, marker, images, keys, grid)
        t_ref.append(time.perf_counter() - start)
        start = time.perf_counter()
        labels, dets = harness_batched(marker, images, keys, grid)
        t_batched.append(time.perf_counter() - start)

    # the reference loop is ordered image-major, the batched one attack-major
    order = {(lab, i): j for j, (lab, i) in enumerate((lab, i) for lab, _ in grid for i in range(len(images)))}
    ref_scores = np.zeros(len(ref))
    ref_p = np.zeros(len(ref))
    for n, (lab, cos, p) in enumerate(ref):
        j = order[(lab, n // len(grid))]
        ref_scores[j], ref_p[j] = cos, p
    got_scores = np.array([d.score for d in dets])
    got_p = np.array([d.p_value for d in dets])
    max_diff = float(np.abs(got_scores - ref_scores).max())
    max_rel_p = float(np.max(np.abs(got_p - ref_p) / np.maximum(ref_p, 1e-300)))
    n = len(dets)
    best_ref, best_batched = min(t_ref), min(t_batched)
    figures = {
        "model": f"{args.model} (random_init)",
        "detector": args.detector,
        "image_size": args.size,
        "images": args.images,
        "attacks": len(grid),
        "detections": n,
        "threads": torch.get_num_threads(),
        "reference_s": round(best_ref, 3),
        "batched_s": round(best_batched, 3),
        "reference_images_per_s": round(n / best_ref, 2),
        "batched_images_per_s": round(n / best_batched, 2),
        "ratio": round(best_ref / best_batched, 2),
        "max_abs_score_diff": max_diff,
        "max_rel_p_value_diff": max_rel_p,
        "same_decisions_at_1e-6": bool(np.array_equal(got_p <= 1e-6, ref_p <= 1e-6)),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{n} detections ({args.images} images of {args.size} px x {len(grid)} attacks), {args.model} random_init, "
          f"{figures['threads']} threads")
    print(f"  evaluate.py-style loop : {best_ref:7.2f} s  ({figures['reference_images_per_s']} images/s)")
    print(f"  harness detect_batch   : {best_batched:7.2f} s  ({figures['batched_images_per_s']} images/s)")
    print(f"  ratio                  : {figures['ratio']:.2f}x  (goal >= 2x)")
    print(f"  scores: max |diff| {max_diff:.2e}, p-values max rel diff {max_rel_p:.2e}, same decisions at 1e-6: "
          f"{figures['same_decisions_at_1e-6']}")
    if max_diff > 1e-4:
        print("error: the two paths disagree", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
