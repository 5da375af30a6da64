"""Image quality of marked images against their originals (protocols.md §4).

- PSNR over RGB in 0-255: 10 log10(255^2 / MSE), the MSE over every pixel and channel of the 8-bit
  images (infinite for identical images).
- SSIM: scikit-image's ``structural_similarity(a, b, channel_axis=2, data_range=255)`` on the 8-bit
  RGB arrays, with its default uniform 7 x 7 window (``gaussian_weights: false``, the default here) or,
  with ``gaussian_weights: true``, Wang et al.'s settings (Gaussian window sigma 1.5,
  ``use_sample_covariance=False``). The two give different values: the result names which was used.

The metrics take an :class:`ImagePairs` (``input_type = "image_pairs"``) and return, like the
detection metrics, ``{cell_label: {name: value}}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class ImagePairs:
    """Originals and their marked versions, row-aligned; ``original`` / ``marked`` may be any sequences
    (lazy ones too) of PIL RGB images or uint8 (H, W, 3) arrays. ``cell`` labels each pair's grid cell
    (pairs differ by cell when the watermarker's parameters are on the grid)."""

    image_id: np.ndarray
    cell: np.ndarray
    original: Sequence[Any]
    marked: Sequence[Any]

    def __post_init__(self) -> None:
        self.image_id = np.asarray(self.image_id, dtype=str)
        self.cell = np.asarray(self.cell, dtype=str) if not isinstance(self.cell, str) else np.full(len(self.image_id), self.cell)
        n = len(self.image_id)
        if not (len(self.cell) == len(self.original) == len(self.marked) == n):
            raise ValueError(f"image_id, cell, original, marked differ in length: "
                             f"{n}, {len(self.cell)}, {len(self.original)}, {len(self.marked)}")

    def cells(self) -> list[str]:
        _, first = np.unique(self.cell, return_index=True)
        return [str(self.cell[i]) for i in np.sort(first)]


def _rgb8(image: Any, what: str) -> np.ndarray:
    a = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{what}: expected an 8-bit RGB image, got dtype {a.dtype} shape {a.shape}")
    return a


def _pair(original: Any, marked: Any, image_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    from harness.errors import UserError

    a, b = _rgb8(original, "original"), _rgb8(marked, "marked")
    if a.shape != b.shape:
        where = f"image {str(image_id)!r}: " if image_id else ""
        raise UserError(f"{where}the marked image is {b.shape[1]}x{b.shape[0]}, the original {a.shape[1]}x{a.shape[0]}")
    return a, b


def psnr(original: Any, marked: Any) -> float:
    """PSNR in dB over RGB 0-255 (inf for identical images)."""
    a, b = _pair(original, marked)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(original: Any, marked: Any, gaussian_weights: bool = False) -> float:
    """scikit-image SSIM over RGB (channel_axis=2, data_range=255); see the module docstring."""
    from skimage.metrics import structural_similarity

    from harness.errors import UserError

    a, b = _pair(original, marked)
    side = 11 if gaussian_weights else 7  # the window skimage uses in each mode
    if min(a.shape[:2]) < side:
        raise UserError(f"SSIM needs images of at least {side}x{side} pixels (got {a.shape[1]}x{a.shape[0]})")
    extra = {"sigma": 1.5, "use_sample_covariance": False} if gaussian_weights else {}
    return float(structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=gaussian_weights, **extra))


def _summary(values: np.ndarray, name: str) -> dict[str, Any]:
    finite = np.isfinite(values)
    if not len(values):
        return {name: None, f"{name}_min": None, "n": 0}
    mean = float(values.mean()) if finite.all() else None  # identical pairs make the mean infinite
    low = float(values.min()) if finite.any() else None
    return {name: mean, f"{name}_min": low, "n": int(len(values))}


class PSNR:
    """Mean PSNR (dB, RGB 0-255) of the marked images against their originals, per cell."""

    input_type = "image_pairs"
    protocol = "watermark-quality/psnr-rgb255"
    version = "1"

    def __call__(self, ground_truth: Any, pairs: ImagePairs) -> dict[str, dict[str, Any]]:
        values = np.array([psnr(*_pair(o, m, i)) for i, o, m in zip(pairs.image_id, pairs.original, pairs.marked)])
        out = {}
        for cell in pairs.cells():
            v = values[pairs.cell == cell]
            out[cell] = {**_summary(v, "psnr"), "identical": int(np.isinf(v).sum())}
        return out


class SSIM:
    """Mean SSIM (scikit-image, RGB, data_range 255) of the marked images against their originals, per cell."""

    input_type = "image_pairs"
    version = "1"

    def __init__(self, gaussian_weights: bool = False) -> None:
        self.gaussian_weights = gaussian_weights
        self.protocol = "watermark-quality/ssim-skimage-" + ("gaussian-sigma1.5" if gaussian_weights else "uniform7")

    def __call__(self, ground_truth: Any, pairs: ImagePairs) -> dict[str, dict[str, Any]]:
        values = np.array([ssim(*_pair(o, m, i), gaussian_weights=self.gaussian_weights)
                           for i, o, m in zip(pairs.image_id, pairs.original, pairs.marked)])
        return {cell: _summary(values[pairs.cell == cell], "ssim") for cell in pairs.cells()}
