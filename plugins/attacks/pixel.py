"""Filters and pixel-level attacks: Gaussian blurs (two definitions), median, pixelization, additive
Gaussian noise and random erasing (the last two draw from the item's rng)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .base import AreaFraction, Attack, OddKernel, Radius, UnitFraction, UnitSigma, scaled_side


def gaussian_kernel(kernel: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``kernel`` taps, centred (taps at -(k-1)/2 .. (k-1)/2), float64."""
    x = np.arange(kernel, dtype=np.float64) - (kernel - 1) / 2.0
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


class Blur(Attack):
    """Gaussian blur, kernel k (odd), sigma = 0.15 k + 0.35 (SSL; torchvision gaussian_blur).

    Gaussian blur with a ``kernel`` of k x k taps (k odd) and sigma = 0.15 k + 0.35.

    The SSL-watermarking / active-indexing definition: torchvision's ``gaussian_blur(img, k)`` with its
    default sigma (0.3 ((k - 1) / 2 - 1) + 0.8 = 0.15 k + 0.35), edges mirrored without repeating the
    border pixel ("reflect"), rounded to the nearest integer. Computed separably in float64 (torchvision
    uses float32, so the two can differ by one level where the exact value is within float32 error of a
    half). k = 11 gives sigma 2.0. For PIL's radius-based blur see ``attack.blur_radius``.
    """

    op = "blur"

    def __init__(self, kernel: OddKernel) -> None:
        super().__init__(kernel=int(kernel), sigma=0.15 * kernel + 0.35)
        self.kernel = int(kernel)
        self.sigma = 0.15 * self.kernel + 0.35

    def apply(self, image, rng):
        from PIL import Image
        from scipy import ndimage

        w = gaussian_kernel(self.kernel, self.sigma)
        x = np.asarray(image, dtype=np.float64)
        # scipy's "mirror" is torch's "reflect": ... c b | a b c d | c b ...
        x = ndimage.correlate1d(x, w, axis=0, mode="mirror")
        x = ndimage.correlate1d(x, w, axis=1, mode="mirror")
        return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


class BlurRadius(Attack):
    """PIL Gaussian blur of standard deviation radius pixels (WAVES, W-Bench).

    PIL's Gaussian blur of standard deviation ``radius`` pixels (``ImageFilter.GaussianBlur``).

    The WAVES / W-Bench definition (their "kernel size" strength is passed to PIL as this radius; W-Bench
    uses 1, 3, 5, 7, 9). PIL approximates the Gaussian by three passes of an extended box blur per axis,
    edges replicated. ``radius`` 0 is the identity.
    """

    op = "blur_radius"

    def __init__(self, radius: Radius) -> None:
        super().__init__(radius=float(radius))
        self.radius = float(radius)

    def apply(self, image, rng):
        from PIL import ImageFilter

        return image.filter(ImageFilter.GaussianBlur(self.radius))


class Median(Attack):
    """Median filter over a kernel x kernel window (PIL MedianFilter).

    Median filter over a ``kernel`` x ``kernel`` window (k odd), edges replicated (PIL MedianFilter).

    Each channel is filtered on its own; k = 3 replaces each value by the median of its 9 neighbours.
    """

    op = "median"

    def __init__(self, kernel: OddKernel) -> None:
        super().__init__(kernel=int(kernel))
        self.kernel = int(kernel)

    def apply(self, image, rng):
        from PIL import ImageFilter

        return image.filter(ImageFilter.MedianFilter(self.kernel))


class Pixelize(Attack):
    """Pixelization: down by ratio, then back up, bicubic (AugLy pixelization).

    Pixelization: downscale each side by ``ratio`` (truncated), then upscale back, both bicubic.

    AugLy's ``pixelization(ratio)``: ``ratio`` 0.1 renders the image from a tenth of its resolution.
    """

    op = "pixelize"

    def __init__(self, ratio: AreaFraction) -> None:
        super().__init__(ratio=float(ratio))
        self.ratio = float(ratio)

    def apply(self, image, rng):
        from PIL import Image

        small = (scaled_side(image.width, self.ratio), scaled_side(image.height, self.ratio))
        return image.resize(small, Image.Resampling.BICUBIC).resize(image.size, Image.Resampling.BICUBIC)


class Noise(Attack):
    """Additive Gaussian noise, sigma in [0, 1] units, drawn from the item's rng.

    Additive Gaussian noise of standard deviation ``sigma`` in [0, 1] intensity units.

    Each channel value v becomes (v / 255 + sigma z) clipped to [0, 1], z ~ N(0, 1) drawn from the item's
    rng (so a query is reproducible), then scaled back to 0..255. ``rounding`` floor truncates as
    torchvision's ``ToPILImage`` does in WAVES and W-Bench (their sigma 0.02 .. 0.1); ``round`` takes the
    nearest level (no -0.5 level bias). ``sigma`` 0.1 is 25.5 levels.
    """

    op = "noise"
    uses_rng = True

    def __init__(self, sigma: UnitSigma, rounding: Literal["floor", "round"] = "floor") -> None:
        super().__init__(sigma=float(sigma), rounding=rounding)
        self.sigma, self.rounding = float(sigma), rounding

    def apply(self, image, rng):
        from PIL import Image

        x = np.asarray(image, dtype=np.float64)
        z = rng.standard_normal(x.shape)
        y = np.clip(x + (255.0 * self.sigma) * z, 0.0, 255.0)  # = 255 * clip(v / 255 + sigma z, 0, 1)
        y = np.floor(y) if self.rounding == "floor" else np.rint(y)
        return Image.fromarray(y.astype(np.uint8))


class Erase(Attack):
    """A black square covering a fraction of the area at a random position (WAVES erasing).

    Random erasing: a black square covering a ``fraction`` of the image area, at a random position.

    WAVES' ``erasing`` (torchvision ``RandomErasing`` with scale and ratio fixed, value 0): the square's
    side is round(sqrt(fraction x W x H)), at most the shorter side; its top-left corner is drawn
    uniformly from the item's rng. ``fraction`` 0.25 blacks out a quarter of a square image.
    """

    op = "erase"
    uses_rng = True

    def __init__(self, fraction: UnitFraction) -> None:
        super().__init__(fraction=float(fraction))
        self.fraction = float(fraction)

    def apply(self, image, rng):
        from PIL import Image

        width, height = image.size
        side = min(width, height, int(round(math.sqrt(self.fraction * width * height))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        x = np.array(image)  # a copy: the input stays untouched
        x[top : top + side, left : left + side] = 0
        return Image.fromarray(x)
