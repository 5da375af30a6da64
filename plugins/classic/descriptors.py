"""Global descriptors that need no learned weights: the offline baselines of every track.

- ``gist``: GIST-like Gabor energy on a spatial grid (after Oliva & Torralba, 2001);
- ``phash``: perceptual / difference / wavelet / average hash bits (the ``imagehash`` library);
- ``color_histogram``: joint HSV or RGB histogram per grid cell;
- ``random``: a content-blind chance baseline (a random unit vector keyed by the pixel bytes).

Each is a class with ``describe(images) -> float32 (n, d)``; numpy and PIL only, vectorised over the
images of a call.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np

from harness.errors import UserError
from harness.limits import require_dim, require_memory

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


def _fit(images: list["Image.Image"], size: int) -> list["Image.Image"]:
    """RGB images resized (short side) and centre-cropped to size x size."""
    from PIL import Image, ImageOps

    return [ImageOps.fit(_rgb(im), (size, size), Image.BILINEAR) for im in images]


def _stack(images: list["Image.Image"], mode: str) -> np.ndarray:
    """Images converted to ``mode`` and stacked: (n, h, w[, c])."""
    return np.stack([np.asarray(im.convert(mode)) for im in images])


def _square(images: list["Image.Image"], size: int, mode: str) -> np.ndarray:
    """Images resized (short side) and centre-cropped to size x size, stacked: (n, size, size[, c])."""
    # resize first: converting the small image (to HSV in particular) is the cheap order
    return _stack(_fit(images, size), mode)


def _rgb(image: "Image.Image") -> "Image.Image":
    return image if image.mode == "RGB" else image.convert("RGB")


def _grid_mean(x: np.ndarray, grid: int) -> np.ndarray:
    """Mean over a grid x grid partition of the last two axes: (..., H, W) -> (..., grid, grid)."""
    *lead, h, w = x.shape
    return x.reshape(*lead, grid, h // grid, grid, w // grid).mean(axis=(-3, -1))


# -- GIST ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _gabor_bank(side: int, scales: int, orientations: int) -> np.ndarray:
    """Frequency responses (scales * orientations, side, side), float32, of one-lobe log-Gabor filters.

    Scale s is centred on 0.25 / 2**s cycles per pixel (octave spacing, about two octaves of bandwidth);
    orientations tile [0, pi). One lobe suffices for a real image (its spectrum is Hermitian) and makes
    the magnitude of the complex response the local energy envelope, which is what GIST averages.
    """
    f = np.fft.fftfreq(side)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0  # log(0) guard; the DC response is zeroed below
    angle = np.arctan2(fy, fx)
    sigma_theta = 0.6 * np.pi / orientations
    bank = []
    for s in range(scales):
        radial = np.exp(-np.log(radius / (0.25 / 2**s)) ** 2 / (2 * np.log(0.55) ** 2))
        radial[0, 0] = 0.0
        for o in range(orientations):
            d = np.angle(np.exp(1j * (angle - np.pi * o / orientations)))  # wrapped to [-pi, pi]
            bank.append(radial * np.exp(-(d**2) / (2 * sigma_theta**2)))
    return np.stack(bank).astype(np.float32)


@lru_cache(maxsize=8)
def _lowpass(side: int, cycles: float) -> np.ndarray:
    """Gaussian low-pass response passing about ``cycles`` cycles per (unpadded) image width."""
    f = np.fft.fftfreq(side) * side
    fy, fx = np.meshgrid(f, f, indexing="ij")
    return np.exp(-(fx**2 + fy**2) / (2 * cycles**2)).astype(np.float32)


class Gist:
    """GIST-like global descriptor: Gabor energy averaged on a spatial grid (scales*orientations*grid^2-D).

    Grayscale, resized (short side) and centre-cropped to ``size``; log intensity with local contrast
    normalisation (high-pass, then division by the local standard deviation); a bank of ``scales`` x
    ``orientations`` log-Gabor filters applied in the frequency domain; the magnitude of each response
    averaged over a ``grid`` x ``grid`` partition. ``color`` appends the per-channel RGB means of the
    grid cells (3*grid^2 values in [0, 1]). Defaults: 4 x 8 x 4 x 4 = 512-D.
    """

    version = "1"

    def __init__(
        self,
        size: int = 128,
        scales: int = 4,
        orientations: int = 8,
        grid: int = 4,
        color: bool = False,
        batch_size: int = 8,
    ) -> None:
        if min(size, scales, orientations, grid, batch_size) < 1:
            raise UserError("gist: size, scales, orientations, grid and batch_size must be >= 1")
        if size % grid:
            raise UserError(f"gist: size ({size}) must be a multiple of grid ({grid})")
        self.size, self.scales, self.orientations, self.grid = size, scales, orientations, grid
        self.color, self.batch_size = color, batch_size
        self.pad = max(4, size // 8)  # reflect padding against wrap-around at the borders
        require_dim(self.dim, "gist")
        side = size + 2 * self.pad  # a batch's spectrum and filter responses, complex64
        require_memory(batch_size * (scales * orientations + 1) * side * side * 8 * 2,
                       f"gist: size {size} with {scales} x {orientations} filters and batch_size {batch_size}")

    @property
    def dim(self) -> int:
        return self.scales * self.orientations * self.grid**2 + (3 * self.grid**2 if self.color else 0)

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._describe(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out)

    def _describe(self, images: list["Image.Image"]) -> np.ndarray:
        from scipy import fft

        n, side, p = len(images), self.size + 2 * self.pad, self.pad
        fitted = _fit(images, self.size)  # once: the colour features reuse it
        gray = np.log1p(_stack(fitted, "L").astype(np.float32))
        x = np.pad(gray, ((0, 0), (p, p), (p, p)), mode="reflect")
        low = _lowpass(side, 4.0 * side / self.size)
        x = x - fft.ifft2(fft.fft2(x, workers=-1) * low, workers=-1).real  # high-pass (whitening)
        local_std = np.sqrt(np.abs(fft.ifft2(fft.fft2(x * x, workers=-1) * low, workers=-1).real))
        x = (x / (0.2 + local_std)).astype(np.float32)
        spectrum = fft.fft2(x, workers=-1)  # (n, side, side) complex64
        bank = _gabor_bank(side, self.scales, self.orientations)
        response = fft.ifft2(spectrum[:, None] * bank[None], workers=-1, overwrite_x=True)  # (n, k, side, side)
        energy = np.abs(response[..., p : p + self.size, p : p + self.size])
        feats = [_grid_mean(energy, self.grid).reshape(n, -1)]
        if self.color:
            rgb = _stack(fitted, "RGB").astype(np.float32) / 255.0
            feats.append(_grid_mean(rgb.transpose(0, 3, 1, 2), self.grid).reshape(n, -1))
        return np.ascontiguousarray(np.concatenate(feats, axis=1), dtype=np.float32)


# -- perceptual hashes ---------------------------------------------------------------------------------
class PerceptualHash:
    """Perceptual hash bits (imagehash) as a {-1, +1} float32 vector, so L2 ranks by Hamming distance.

    ``kind``: ``phash`` (DCT), ``dhash`` (gradient), ``whash`` (Haar wavelet; hash_size a power of 2)
    or ``average``. ``hash_size`` h gives h*h bits.
    """

    version = "1"

    def __init__(self, kind: Literal["phash", "dhash", "whash", "average"] = "phash", hash_size: int = 8) -> None:
        if hash_size < 2:
            raise UserError(f"phash: hash_size must be >= 2 (got {hash_size})")
        if kind == "whash" and hash_size & (hash_size - 1):
            raise UserError(f"phash: kind 'whash' needs hash_size a power of 2 (got {hash_size})")
        self.kind, self.hash_size = kind, hash_size
        require_dim(self.dim, "phash")

    @property
    def dim(self) -> int:
        return self.hash_size**2

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        import imagehash

        fn = {
            "phash": imagehash.phash,
            "dhash": imagehash.dhash,
            "whash": imagehash.whash,
            "average": imagehash.average_hash,
        }[self.kind]
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        bits = np.stack([np.asarray(fn(im, hash_size=self.hash_size).hash, dtype=bool).ravel() for im in images])
        return np.where(bits, 1.0, -1.0).astype(np.float32)


# -- colour histogram ----------------------------------------------------------------------------------
class ColorHistogram:
    """Joint colour histogram (HSV or RGB) in each cell of a spatial grid, L1 or L2 normalised.

    ``bins`` per channel (default 8 hue x 3 saturation x 3 value), ``grid`` x ``grid`` cells, computed
    on the image resized (short side) and centre-cropped to ``size``. Dimension prod(bins) * grid^2.
    """

    version = "1"

    def __init__(
        self,
        space: Literal["hsv", "rgb"] = "hsv",
        bins: tuple[int, int, int] = (8, 3, 3),
        grid: int = 2,
        norm: Literal["l1", "l2"] = "l1",
        size: int = 128,
    ) -> None:
        bins = tuple(int(b) for b in bins)  # type: ignore[assignment]
        if len(bins) != 3 or not all(1 <= b <= 256 for b in bins):
            raise UserError(f"color_histogram: bins must be 3 integers in 1..256 (got {list(bins)})")
        if grid < 1 or size < grid:
            raise UserError(f"color_histogram: need 1 <= grid <= size (got grid {grid}, size {size})")
        self.space, self.bins, self.grid, self.norm, self.size = space, bins, grid, norm, size
        require_dim(self.dim, "color_histogram")
        require_memory(32 * size * size * 16, f"color_histogram: size {size} (a batch of 32 images)")

    @property
    def dim(self) -> int:
        return int(np.prod(self.bins)) * self.grid**2

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pix = _square(images, self.size, "HSV" if self.space == "hsv" else "RGB")  # (n, s, s, 3) uint8
        b0, b1, b2 = self.bins
        # per-channel lookup tables: byte value -> its bin, pre-multiplied by the joint-index stride
        levels = np.arange(256, dtype=np.int32)
        luts = [((levels * nb) >> 8) * stride for nb, stride in ((b0, b1 * b2), (b1, b2), (b2, 1))]
        joint = luts[0][pix[..., 0]] + luts[1][pix[..., 1]] + luts[2][pix[..., 2]]
        cell_1d = np.arange(self.size) * self.grid // self.size
        cell = cell_1d[:, None] * self.grid + cell_1d[None, :]  # (s, s)
        nbins, n = b0 * b1 * b2, len(images)
        flat = (np.arange(n, dtype=np.int64)[:, None, None] * self.grid**2 + cell) * nbins + joint
        hist = np.bincount(flat.ravel(), minlength=n * self.grid**2 * nbins).reshape(n, -1).astype(np.float32)
        order = 1 if self.norm == "l1" else 2
        return hist / np.linalg.norm(hist, ord=order, axis=1, keepdims=True)


# -- chance baseline -----------------------------------------------------------------------------------
class RandomDescriptor:
    """Content-blind chance baseline: a random unit vector seeded by a hash of the pixels.

    Identical pixels (same size, same RGB bytes) give identical vectors; any other image gets an
    unrelated one, so retrieval with it measures chance level.
    """

    version = "1"

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        if dim < 1 or seed < 0:
            raise UserError(f"random: need dim >= 1 and seed >= 0 (got dim {dim}, seed {seed})")
        self.dim, self.seed = dim, seed
        require_dim(dim, "random")

    def describe(self, images: list["Image.Image"]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            rgb = _rgb(im)
            digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).digest()
            rng = np.random.default_rng([self.seed, int.from_bytes(digest[:16], "little")])
            v = rng.standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


DESCRIPTORS = {
    "gist": Gist,
    "phash": PerceptualHash,
    "color_histogram": ColorHistogram,
    "random": RandomDescriptor,
}
