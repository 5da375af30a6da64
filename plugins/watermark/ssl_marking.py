"""The constraints and augmentations of SSL watermarking's marking loop (arXiv 2112.09581), in torch.

All functions take images in the backbone's normalised space ((pixels/255 - mean) / std, shape
(B, 3, H, W)), as the reference optimises them, so that Adam's learning rate means the same thing.

- :func:`ssim_attenuation`: delta = x - x0 is multiplied by the channel-summed SSIM map of (x, x0),
  clamped at 0 (Gaussian window 17 x 17, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, zero padding).
- :func:`psnr_clip`: delta is scaled down so that PSNR(x, x0) in 0-255 pixels is at least the
  target: factor min(1, sqrt(MSE_target / MSE)) per image (the reference's
  sqrt(10^((psnr - target)/10)) when below target, written so that no branch divides by zero).
- :func:`sample_augmentation` / :func:`augment`: one of none / rotation / crop / resize / blur with
  equal probability, plus a horizontal flip with probability 1/2; rotation angle vonmises(0, 1) x 30 /
  pi degrees; crop of area U(0.2, 1) and aspect exp(U(log 3/4, log 4/3)) at a random position; resize
  by area U(0.2, 1) (both sides x sqrt(s); the reference resizes the short side to sqrt(s) times the
  short side of a sampled crop box, a quirk not kept); Gaussian blur with an odd kernel 1..17 and
  sigma 0.15 k + 0.35. Crop and resize change the size, as in the reference (no resize back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

KINDS = ("none", "rotation", "crop", "resize", "blur")


@dataclass(frozen=True)
class Augmentation:
    kind: str
    param: Any
    flip: bool


def gaussian_window(size: int = 17, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    g /= g.sum()
    return np.outer(g, g).astype(np.float32)


def ssim_map(x: "torch.Tensor", y: "torch.Tensor", window: "torch.Tensor") -> "torch.Tensor":
    """Per-channel SSIM map (B, 3, H, W) with a (3, 1, k, k) window."""
    import torch.nn.functional as F

    pad = window.shape[-1] // 2
    conv = lambda t: F.conv2d(t, window, padding=pad, groups=3)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x**2
    syy = conv(y * y) - mu_y**2
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim_attenuation(x: "torch.Tensor", x0: "torch.Tensor", window: "torch.Tensor") -> "torch.Tensor":
    heat = ssim_map(x, x0, window).sum(dim=1, keepdim=True).clamp_min(0)
    return x0 + (x - x0) * heat


def psnr_clip(x: "torch.Tensor", x0: "torch.Tensor", std255: "torch.Tensor", target_psnr: float) -> "torch.Tensor":
    """Scale x - x0 per image so that PSNR >= target (std255 = std * 255, shape (1, 3, 1, 1))."""
    delta = x - x0
    mse = ((delta * std255) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    mse_target = 255.0**2 * 10.0 ** (-target_psnr / 10.0)
    factor = (mse_target / mse.clamp_min(1e-20)).sqrt().clamp(max=1.0)
    return x0 + delta * factor


def sample_augmentation(rng: np.random.Generator, height: int, width: int) -> Augmentation:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    flip = bool(rng.random() < 0.5)
    if kind == "rotation":
        return Augmentation(kind, float(rng.vonmises(0.0, 1.0) * 30.0 / np.pi), flip)
    if kind == "crop":
        area = rng.uniform(0.2, 1.0) * height * width
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        tw = int(min(width, max(1, round(np.sqrt(area * aspect)))))
        th = int(min(height, max(1, round(np.sqrt(area / aspect)))))
        top = int(rng.integers(0, height - th + 1))
        left = int(rng.integers(0, width - tw + 1))
        return Augmentation(kind, (top, left, th, tw), flip)
    if kind == "resize":
        s = float(np.sqrt(rng.uniform(0.2, 1.0)))
        return Augmentation(kind, (max(1, round(height * s)), max(1, round(width * s))), flip)
    if kind == "blur":
        k = int(rng.integers(1, 18))
        k -= 1 - k % 2  # odd, 1..17
        return Augmentation(kind, k, flip)
    return Augmentation(kind, None, flip)


def augment(x: "torch.Tensor", aug: Augmentation) -> "torch.Tensor":
    """Apply ``aug`` to a (1, 3, H, W) tensor, differentiably."""
    import torchvision.transforms.functional as TF

    if aug.kind == "rotation":
        x = TF.rotate(x, aug.param, interpolation=TF.InterpolationMode.BILINEAR)
    elif aug.kind == "crop":
        top, left, th, tw = aug.param
        x = x[..., top : top + th, left : left + tw]
    elif aug.kind == "resize":
        x = TF.resize(x, list(aug.param), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    elif aug.kind == "blur" and aug.param > 1:
        k = min(aug.param, 2 * (min(x.shape[-2:]) // 2) - 1)  # reflect padding needs k // 2 < side
        if k > 1:
            sigma = 0.15 * k + 0.35
            x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    if aug.flip:
        x = x.flip(-1)
    return x


def output_shape(aug: Augmentation, height: int, width: int) -> tuple[int, int]:
    if aug.kind == "crop":
        return aug.param[2], aug.param[3]
    if aug.kind == "resize":
        return aug.param
    return height, width
