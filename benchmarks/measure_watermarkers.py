"""Figures of each watermarking method on 512 x 512 images: embed and detect time per image, bit
accuracy of clean marked images and after JPEG 50 (PIL), PSNR. Not a speed ratio: the README's table
of methods comes from here. The SSL rows use a random-initialised backbone (labelled): its bit
accuracy says nothing about the method with a trained network, its timings do; a PCA whitening fitted
on other crops of the sample images stands in for the paper's.

    python benchmarks/measure_watermarkers.py                         # 8 images, every method
    python benchmarks/measure_watermarkers.py --methods dwt_dct,rivagan --images 16
    python benchmarks/measure_watermarkers.py --methods ssl --ssl-model resnet50 --ssl-steps 10
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

import numpy as np


def jpeg(image, quality=50):
    from PIL import Image

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def fit_whitening(model: str, path: str, dim: int = 256, n: int = 600, size: int = 128) -> None:
    import torch

    from harness.testing import sample_images
    from harness_plugins.watermark.ssl import SSLWatermarker

    m = SSLWatermarker(model=model, device="cpu")
    train = sample_images(n + 8, size)[8:]
    with torch.no_grad():
        f = np.concatenate([m.features(m._to_tensor(train[i : i + 32])).double().numpy() for i in range(0, n, 32)])
    mu = f.mean(0)
    ev, vecs = np.linalg.eigh(np.cov((f - mu).T))
    top = np.argsort(ev)[::-1][: min(dim, n - 1)]
    w = (vecs[:, top] / np.sqrt(ev[top])).T
    np.savez(path, weight=w.astype(np.float32), bias=(-w @ mu).astype(np.float32))


def build(name: str, args, tmp: str):
    from harness_plugins.watermark.invisible import DwtDct, DwtDctSvd, RivaGAN
    from harness_plugins.watermark.ssl import SSLWatermarker

    if name == "dwt_dct":
        return DwtDct(bits=32)
    if name == "dwt_dct_svd":
        return DwtDctSvd(bits=32)
    if name == "rivagan":
        return RivaGAN()
    if name == "ssl":
        wpath = os.path.join(tmp, "whitening.npz")
        fit_whitening(args.ssl_model, wpath)
        return SSLWatermarker(model=args.ssl_model, whitening=wpath, bits=32, steps=args.ssl_steps, device="cpu", batch_size=1)
    raise SystemExit(f"unknown method {name}")


def measure(name: str, marker, images, keys) -> dict:
    from harness_plugins.watermark.quality import psnr

    t0 = time.perf_counter()
    marked = [marker.embed(im, k) for im, k in zip(images, keys)]
    t_embed = (time.perf_counter() - t0) / len(images)
    t0 = time.perf_counter()
    clean = [marker.detect(im, k) for im, k in zip(marked, keys)]
    t_detect = (time.perf_counter() - t0) / len(images)
    after = [marker.detect(jpeg(im), k) for im, k in zip(marked, keys)]
    unmarked = [marker.detect(im, k) for im, k in zip(images, keys)]
    acc = lambda ds: [float(np.mean(d.bits == marker.message(k))) for d, k in zip(ds, keys)]  # noqa: E731
    a_clean, a_jpeg, a_off = acc(clean), acc(after), acc(unmarked)
    q = [psnr(o, m) for o, m in zip(images, marked)]
    return {
        "method": name,
        "embed_s_per_image": round(t_embed, 4),
        "detect_s_per_image": round(t_detect, 4),
        "bit_acc_clean": [round(min(a_clean), 3), round(float(np.mean(a_clean)), 3), round(max(a_clean), 3)],
        "bit_acc_jpeg50": [round(min(a_jpeg), 3), round(float(np.mean(a_jpeg)), 3), round(max(a_jpeg), 3)],
        "bit_acc_unmarked_mean": round(float(np.mean(a_off)), 3),
        "psnr_mean": round(float(np.mean(q)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dwt_dct,dwt_dct_svd,rivagan,ssl")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--ssl-model", default="resnet50")
    parser.add_argument("--ssl-steps", type=int, default=10, help="marking steps measured (the paper uses 100)")
    parser.add_argument("--ssl-images", type=int, default=2, help="images for the (slow) SSL rows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from harness.testing import sample_images

    images = sample_images(args.images, args.size)
    keys = list(range(1, args.images + 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            marker = build(name, args, tmp)
            n = args.ssl_images if name == "ssl" else args.images
            if hasattr(marker, "detect"):
                marker.detect(images[0], 0)  # load models outside the timing
            row = measure(name, marker, images[:n], keys[:n])
            if name == "ssl":
                row["method"] = f"ssl ({marker.backbone_label}, 32 bits, {args.ssl_steps} steps)"
                row["embed_s_per_step"] = round(row["embed_s_per_image"] / max(1, args.ssl_steps), 4)
            rows.append(row)
            if not args.json:
                print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
