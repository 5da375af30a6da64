"""Classic (weight-free) descriptors: shapes, determinism, meaningful invariances, reference checks."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from harness.errors import UserError
from harness.params import check_params, describe_params
from harness_plugins.classic.descriptors import (
    DESCRIPTORS,
    ColorHistogram,
    Gist,
    PerceptualHash,
    RandomDescriptor,
)


def _pil(arr: np.ndarray, side: int = 160) -> Image.Image:
    im = Image.fromarray(arr)
    return im.convert("RGB").resize((side, side), Image.BILINEAR)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {
        name: _pil(getattr(data, name)())
        for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
    }


def _jpeg(im: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _grating(side: int, freq: float, angle: float) -> Image.Image:
    """Sinusoidal stripes of ``freq`` cycles/pixel whose wave vector points at ``angle`` (radians from
    the x axis, y pointing down the rows)."""
    y, x = np.mgrid[0:side, 0:side]
    wave = 128 + 100 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)))
    return Image.fromarray(wave.astype(np.uint8)).convert("RGB")


ALL = [Gist(), Gist(color=True), PerceptualHash(), PerceptualHash(kind="dhash"), ColorHistogram(), RandomDescriptor()]


@pytest.mark.parametrize("desc", ALL, ids=lambda d: type(d).__name__)
def test_shape_dtype_determinism_and_batch_independence(desc, photos):
    images = list(photos.values())
    x = desc.describe(images)
    assert x.dtype == np.float32 and x.shape == (len(images), desc.dim) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, desc.describe(images))
    # a row never depends on the other images of the call (GIST chunks, histogram batching)
    singles = np.concatenate([desc.describe([im]) for im in images[::-1]])[::-1]
    np.testing.assert_allclose(x, singles, rtol=1e-5, atol=1e-6)
    assert desc.describe([]).shape == (0, desc.dim)


def test_registry_versions_and_typed_parameters():
    assert set(DESCRIPTORS) == {"gist", "phash", "color_histogram", "random"}
    for factory in DESCRIPTORS.values():
        assert factory.version == "1"
        params = describe_params(factory)
        assert params and all(p.annotation and not p.required for p in params)
        assert factory.__doc__.strip()
    # what YAML gives (lists for tuples) validates; a mistyped choice is caught with a suggestion
    clean, problems = check_params(ColorHistogram, {"bins": [4, 4, 4], "space": "rgb"})
    assert not problems and ColorHistogram(**clean).dim == 64 * 4
    _, problems = check_params(PerceptualHash, {"kind": "dhsh"})
    assert problems and problems[0].suggestion == "dhash"


# -- GIST ----------------------------------------------------------------------------------------------
def test_gist_default_is_512d_and_color_adds_grid_means():
    assert Gist().dim == 512
    red = Image.new("RGB", (100, 80), (255, 0, 0))
    x = Gist(color=True, grid=2, scales=2, orientations=4).describe([red])
    assert x.shape == (1, 2 * 4 * 4 + 3 * 4)
    np.testing.assert_allclose(x[0, -12:], np.repeat([1.0, 0.0, 0.0], 4), atol=1e-6)


def test_gist_jpeg_copy_is_closer_than_other_images(photos):
    gist = Gist()
    names = list(photos)
    originals = gist.describe([photos[n] for n in names])
    copies = gist.describe([_jpeg(photos[n], quality=60) for n in names])
    dist = ((copies[:, None, :] - originals[None, :, :]) ** 2).sum(-1)  # (copy, original)
    assert (dist.argmin(axis=1) == np.arange(len(names))).all()
    # and by a margin: the copy is much closer to its original than to the nearest other image
    off = dist + np.diag(np.full(len(names), np.inf))
    assert (np.diag(dist) < 0.5 * off.min(axis=1)).all()


def test_gist_is_insensitive_to_uniform_brightness_scaling(photos):
    # log intensity + local contrast normalisation: x -> 0.6 x changes little
    gist = Gist()
    im = photos["astronaut"]
    darker = Image.fromarray((np.asarray(im) * 0.6).astype(np.uint8))
    a, b, other = gist.describe([im, darker, photos["coffee"]])
    assert np.linalg.norm(a - b) < 0.3 * np.linalg.norm(a - other)


@pytest.mark.parametrize("orientation", range(8))
def test_gist_filter_bank_responds_at_the_grating_scale_and_orientation(orientation):
    # 0.25 cycles/pixel is the centre of scale 0, 0.25 / 4 of scale 2; orientation o of 8 is the wave
    # vector at o * pi / 8 (a diagonal at pi / 4 and one at 3 pi / 4 are told apart)
    gist = Gist(size=64, grid=1)
    angle = orientation * np.pi / 8
    energy = gist.describe([_grating(64, 0.25, angle)])[0].reshape(4, 8)
    assert np.unravel_index(energy.argmax(), energy.shape) == (0, orientation)
    coarse = gist.describe([_grating(64, 0.25 / 4, angle)])[0].reshape(4, 8)
    assert np.unravel_index(coarse.argmax(), coarse.shape) == (2, orientation)


def test_gist_rejects_bad_parameters():
    with pytest.raises(UserError, match="multiple of grid"):
        Gist(size=130, grid=4)
    with pytest.raises(UserError):
        Gist(scales=0)


# -- perceptual hashes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["phash", "dhash", "whash", "average"])
def test_hash_bits_rank_by_hamming_distance(kind, photos):
    desc = PerceptualHash(kind=kind, hash_size=8)
    images = list(photos.values()) + [_jpeg(photos["chelsea"], 50)]
    x = desc.describe(images)
    assert set(np.unique(x)) <= {-1.0, 1.0} and x.shape == (len(images), 64)
    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash,
          "average": imagehash.average_hash}[kind]
    hashes = [fn(im, hash_size=8) for im in images]
    hamming = np.array([[h1 - h2 for h2 in hashes] for h1 in hashes])  # the library's own distance
    sq_l2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(sq_l2, 4 * hamming)


def test_phash_of_a_jpeg_copy_is_nearly_identical(photos):
    desc = PerceptualHash(hash_size=16)
    a, b, c = desc.describe([photos["coffee"], _jpeg(photos["coffee"], 40), photos["rocket"]])
    assert (a != b).sum() < 0.1 * a.size < (a != c).sum()


def test_whash_needs_power_of_two():
    with pytest.raises(UserError, match="power of 2"):
        PerceptualHash(kind="whash", hash_size=12)


# -- colour histogram ----------------------------------------------------------------------------------
def _reference_histogram(im: Image.Image, space: str, bins, grid: int, size: int, norm: str) -> np.ndarray:
    """Slow reference: per cell, numpy.histogramdd over the pixel colours."""
    sq = ImageOps.fit(im.convert("RGB"), (size, size), Image.BILINEAR)
    pix = np.asarray(sq.convert("HSV" if space == "hsv" else "RGB")).astype(float)
    edges = [np.arange(b + 1) * 256.0 / b for b in bins]
    cell_of = [i * grid // size for i in range(size)]
    parts = []
    for cy in range(grid):
        for cx in range(grid):
            rows = [i for i in range(size) if cell_of[i] == cy]
            cols = [j for j in range(size) if cell_of[j] == cx]
            sub = pix[np.ix_(rows, cols)].reshape(-1, 3)
            h, _ = np.histogramdd(sub, bins=edges)
            parts.append(h.ravel())
    v = np.concatenate(parts)
    return v / (np.abs(v).sum() if norm == "l1" else np.sqrt((v**2).sum()))


@pytest.mark.parametrize(
    "space, bins, grid, size, norm",
    [("hsv", (8, 3, 3), 2, 32, "l1"), ("rgb", (4, 4, 4), 3, 30, "l2"), ("rgb", (5, 2, 7), 3, 31, "l1")],
)
def test_color_histogram_matches_reference(space, bins, grid, size, norm, photos):
    desc = ColorHistogram(space=space, bins=bins, grid=grid, size=size, norm=norm)
    images = [photos["astronaut"], photos["coffee"]]
    expected = np.stack([_reference_histogram(im, space, bins, grid, size, norm) for im in images])
    np.testing.assert_allclose(desc.describe(images), expected, rtol=1e-5, atol=1e-7)


# -- chance baseline -----------------------------------------------------------------------------------
def test_random_is_keyed_by_pixels_only(photos):
    desc = RandomDescriptor(dim=32)
    a = photos["chelsea"]
    same_pixels = Image.fromarray(np.asarray(a).copy())
    x = desc.describe([a, same_pixels, _jpeg(a, 95), photos["coffee"]])
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x[0], x[1])
    assert abs(x[0] @ x[2]) < 0.9 and abs(x[0] @ x[3]) < 0.9
    assert not np.allclose(RandomDescriptor(dim=32, seed=1).describe([a]), x[:1])


def test_random_vectors_are_uncorrelated():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(200)]
    x = RandomDescriptor(dim=64).describe(images)
    cos = x @ x.T
    off = cos[~np.eye(len(x), dtype=bool)]
    assert abs(off.mean()) < 0.02 and 0.08 < off.std() < 0.16  # ~ 1/sqrt(64) for random directions
