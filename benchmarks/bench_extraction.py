"""Extraction throughput (images/s) of a timm model through the harness vs a bare forward loop.

The harness path is ``harness.extract.extract``: JPEG files decoded and preprocessed in DataLoader
worker processes, ``descriptor.forward`` on each batch. The bare loop runs the same model (same
weights, same device, same threads) on tensors preprocessed beforehand, so it measures the model alone.
Goal: harness >= 0.9 x bare loop. Random-initialised weights (no download); images are resized crops
of scikit-image's sample photos written as JPEG files in a temporary directory.

    python benchmarks/bench_extraction.py                   # resnet50, 224 px, 256 images
    python benchmarks/bench_extraction.py --quick           # resnet18, 64 images
    python benchmarks/bench_extraction.py --model vit_small_patch16_224 --images 128 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "motorcycle_left")


def write_images(folder: str, n: int, seed: int = 0) -> list:
    """n JPEG files (random crops of the sample photos, 480 x 360 like a typical DISC21 image)."""
    from PIL import Image
    from skimage import data

    from harness.parts import Item

    rng = np.random.default_rng(seed)
    sources = []
    for name in SAMPLES:
        try:
            sources.append(Image.fromarray(getattr(data, name)()).convert("RGB"))
        except Exception:  # noqa: BLE001 - some samples are fetched lazily; use what is shipped
            continue
    items = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        path = os.path.join(folder, f"{i:06d}.jpg")
        src.crop((x, y, x + cw, y + ch)).resize((480, 360), Image.BILINEAR).save(path, quality=90)
        items.append(Item(id=f"{i:06d}", path=path))
    return items


def bare_loop(model, batches, device, dtype) -> float:
    """Seconds for model(batch) over preloaded batches (the reference)."""
    import torch

    with torch.inference_mode():
        model(batches[0][:2].to(device, dtype))  # warm-up
        start = time.perf_counter()
        for x in batches:
            out = model(x.to(device, dtype))
            out.float().cpu().numpy()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the harness's)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating timed runs of each path (best kept)")
    parser.add_argument("--quick", action="store_true", help="resnet18, 64 images")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.model, args.images = "resnet18", 64

    import torch

    from harness.extract import default_workers, extract
    from harness_plugins.timm.descriptors import TimmDescriptor

    workers = default_workers() if args.workers is None else args.workers
    desc = TimmDescriptor(args.model, size=args.size, pooling="model", batch_size=args.batch_size)
    model = desc.model  # built once, shared by both paths
    with tempfile.TemporaryDirectory() as tmp:
        items = write_images(tmp, args.images)
        samples = [desc.preprocess(it.load()) for it in items]
        batches = [torch.stack(samples[i : i + args.batch_size]) for i in range(0, len(samples), args.batch_size)]
        extract(desc, items[: 2 * args.batch_size], batch_size=args.batch_size, workers=workers)  # warm-up
        bare_times, harness_times = [], []
        for _ in range(args.repeat):  # alternate, and keep the best of each: robust to a busy machine
            bare_times.append(bare_loop(model, batches, desc.device, desc._dtype(torch)))
            start = time.perf_counter()
            vectors = extract(desc, items, batch_size=args.batch_size, workers=workers)
            harness_times.append(time.perf_counter() - start)
        bare, harness_s = min(bare_times), min(harness_times)
        reference = np.concatenate([desc.forward(b) for b in batches[:1]])
    same = bool(np.allclose(vectors[: len(reference)], reference, rtol=1e-4, atol=1e-5))
    result = {
        "model": args.model,
        "size": args.size,
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": workers,
        "device": str(desc.device),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "bare_images_per_s": args.images / bare,
        "harness_images_per_s": args.images / harness_s,
        "ratio": bare / harness_s,
        "bare_s": bare_times,
        "harness_s": harness_times,
        "same_descriptors": same,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{args.model} at {args.size} px, {args.images} JPEG images, batch {args.batch_size}, "
          f"{workers} loader workers, {result['device']} ({result['torch_threads']} threads, {result['cpus']} CPUs)")
    print(f"{'path':<34}{'images/s':>10}")
    print(f"{'bare loop (preloaded tensors)':<34}{result['bare_images_per_s']:>10.1f}")
    print(f"{'harness extract (decode+forward)':<34}{result['harness_images_per_s']:>10.1f}")
    print(f"ratio harness / bare: {result['ratio']:.3f} (goal >= 0.9); identical descriptors: {same}")


if __name__ == "__main__":
    main()
