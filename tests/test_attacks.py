"""Exact attacks: each one against an independent implementation of its definition, on natural images.

References: torchvision's functional ops where they define the attack (the papers call them on PIL
images), torchvision's tensor / codec implementations, numpy re-derivations of PIL's arithmetic, AugLy
itself. Pixel for pixel where the definition allows it; where it cannot, the tolerance and its reason
are stated at the assertion.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from harness.params import check_params
from harness.testing import check_attack, registry_with, sample_images
from harness_plugins.attacks.base import Chain
from harness_plugins.attacks.catalog import ATTACKS, EXAMPLE_PARAMS

USES_RNG = {"attack.noise", "attack.erase", "attack.resized_crop"}

# torchvision.io's codecs are the independent JPEG / WebP implementation here; their deprecation notice
# (in favour of torchcodec) is not this suite's concern.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test (AugLy's assets are in its wheel)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _images() -> list[Image.Image]:
    import skimage.data

    # Three natural squares and one non-square natural photo with odd sides (crop offsets, rounding).
    return sample_images(3, 96) + [Image.fromarray(skimage.data.chelsea()).resize((151, 101), Image.Resampling.BILINEAR)]


IMAGES = _images()
RNG = np.random.default_rng(0)


def attack(name: str, **params):
    clean, problems = check_params(ATTACKS[name], params)
    assert not problems, problems
    return ATTACKS[name](**clean)


def run(name: str, image: Image.Image, seed: int = 0, **params) -> np.ndarray:
    return np.asarray(attack(name, **params)(image, np.random.default_rng(seed)))


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def assert_same(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    assert diff.max() == 0, f"{(diff > 0).sum()} values differ, up to {diff.max()}"


def assert_close(ours: np.ndarray, ref: np.ndarray, *, max_abs: float, max_frac: float = 1.0) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    assert diff.max() <= max_abs + 1e-9, f"max difference {diff.max()} > {max_abs}"
    assert (diff > 1e-9).mean() <= max_frac, f"{(diff > 1e-9).mean():.2%} of values differ (> {max_frac:.2%})"


# --- contract, registration, parameters, records ---------------------------------------------------


def test_registered_through_the_plugin_hook():
    import harness_plugins.attacks

    registry = registry_with(harness_plugins.attacks)
    assert set(ATTACKS) <= set(registry.names("transform"))
    assert {"attack.none", "attack.rotate", "attack.center_crop", "attack.resize", "attack.crop_side",
            "attack.blur", "attack.blur_radius", "attack.jpeg", "attack.webp", "attack.contrast",
            "attack.brightness", "attack.saturation", "attack.sharpness", "attack.hue", "attack.noise",
            "attack.median", "attack.erase", "attack.hflip", "attack.grayscale", "attack.pixelize",
            "attack.overlay_text", "attack.overlay_emoji", "attack.meme", "attack.screenshot"} <= set(ATTACKS)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_meets_the_attack_contract(name):
    for image in (IMAGES[0], IMAGES[3]):
        check_attack(attack(name, **EXAMPLE_PARAMS.get(name, {})), uses_rng=name in USES_RNG, image=image)
    assert attack(name, **EXAMPLE_PARAMS.get(name, {}))(IMAGES[0].convert("L"), RNG).mode == "RGB"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_factory_is_documented_versioned_and_records_its_parameters(name):
    import inspect

    factory = ATTACKS[name]
    first_line = (factory.__doc__ or "").strip().splitlines()[0]
    assert first_line.endswith(".") and "``" not in first_line, first_line
    assert isinstance(factory.version, str)
    params = EXAMPLE_PARAMS.get(name, {})
    (op,) = attack(name, **params).operations()
    assert op["op"] == name.removeprefix("attack.")
    signature = [p for p in inspect.signature(factory).parameters if p != "self"]
    assert set(signature) <= set(op), f"record {op} misses parameters {set(signature) - set(op)}"
    for key, value in params.items():
        assert op[key] == value
    json.dumps(op)


@pytest.mark.parametrize("name, params, fragment", [
    ("attack.blur", {"kernel": 4}, "odd"),
    ("attack.median", {"kernel": 0}, "greater than or equal to 1"),
    ("attack.hue", {"shift": 0.7}, "less than or equal to 0.5"),
    ("attack.center_crop", {"area": 0.0}, "greater than 0"),
    ("attack.resize", {"area": 1.5}, "less than or equal to 1"),
    ("attack.jpeg", {"quality": 101}, "less than or equal to 100"),
    ("attack.jpeg", {"quality": "50"}, "valid integer"),
    ("attack.rotate", {"degrees": 25, "interpolation": "bilinar"}, "bilinear"),
    ("attack.rotate", {}, "missing"),
    ("attack.noise", {"sigma": 25}, "less than or equal to 1"),
    ("attack.screenshot", {"template": "desktop"}, "web"),
    ("attack.overlay_text", {"color": [255, 0, 256]}, "less than or equal to 255"),
])
def test_bad_parameters_are_spec_errors(name, params, fragment):
    _, problems = check_params(ATTACKS[name], params)
    assert problems and any(fragment in f"{p.message} {p.suggestion}" for p in problems), problems


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5)])
def test_tiny_images_are_attacked_or_refused_clearly(size):
    from harness.errors import UserError

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for name in sorted(ATTACKS):
        cases = [EXAMPLE_PARAMS.get(name, {})] + ([{"kernel": 19}] if name == "attack.blur" else [])
        for params in cases:
            if name == "attack.overlay_text":  # a font of 0 px cannot be drawn: one clear line, not a crash
                with pytest.raises(UserError, match="0 px"):
                    attack(name, **params)(image, RNG)
                continue
            out = attack(name, **params)(image, np.random.default_rng(0))
            assert out.mode == "RGB" and min(out.size) >= 1, name


def test_asset_names_are_checked_when_the_attack_is_created():
    from harness.errors import UserError

    with pytest.raises(UserError, match="did you mean 'smileys/smiling_face_with_heart_eyes.png'"):
        attack("attack.overlay_emoji", emoji="smileys/smiling_face_with_heart_eye.png")
    with pytest.raises(UserError, match="bundled fonts"):
        attack("attack.overlay_text", font="../../etc/passwd")
    with pytest.raises(UserError, match="one non-empty line"):
        attack("attack.meme", text="two\nlines")


# --- geometry ---------------------------------------------------------------------------------------


def test_none_is_the_identity_on_a_copy():
    for image in IMAGES:
        out = attack("attack.none")(image, RNG)
        assert out is not image
        assert_same(arr(out), arr(image))


def _rotate_reference(a: np.ndarray, degrees: float, expand: bool) -> np.ndarray:
    """Nearest-neighbour rotation written from the geometry: output pixel centres mapped back through
    the inverse rotation about the image centre (counter-clockwise on screen, y pointing down),
    black outside. The matrix entries are rounded to 15 decimals and the expanded canvas spans
    ceil(max) - floor(min) of the rotated corners, as the definition (PIL) does."""
    h, w = a.shape[:2]
    t = math.radians(degrees)
    c, s = round(math.cos(t), 15), round(math.sin(t), 15)
    if expand:
        xs = [w / 2 + (x - w / 2) * c + (y - h / 2) * s for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
        ys = [h / 2 - (x - w / 2) * s + (y - h / 2) * c for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
        wo, ho = math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))
    else:
        wo, ho = w, h
    yo, xo = np.mgrid[0:ho, 0:wo] + 0.5
    dx, dy = xo - wo / 2, yo - ho / 2
    x, y = w / 2 + dx * c - dy * s, h / 2 + dx * s + dy * c
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    xi, yi = np.clip(np.floor(x).astype(int), 0, w - 1), np.clip(np.floor(y).astype(int), 0, h - 1)
    return np.where(inside[..., None], a[yi, xi], 0).astype(np.uint8)


@pytest.mark.parametrize("degrees", [5, 25, -30, 33.3, 45, 90, 180])
@pytest.mark.parametrize("interpolation, expand", [("nearest", False), ("bilinear", True), ("bilinear", False),
                                                   ("nearest", True)])
def test_rotate_is_torchvision_rotate(degrees, interpolation, expand):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    mode = InterpolationMode.NEAREST if interpolation == "nearest" else InterpolationMode.BILINEAR
    for image in IMAGES:
        ours = run("attack.rotate", image, degrees=degrees, interpolation=interpolation, expand=expand)
        assert_same(ours, arr(F.rotate(image, degrees, mode, expand=expand)))


@pytest.mark.parametrize("degrees", [5, 25, -30, 33.3, 90, -90, 180])
@pytest.mark.parametrize("expand", [False, True])
def test_rotate_nearest_matches_the_geometry(degrees, expand):
    for image in IMAGES:
        ours = run("attack.rotate", image, degrees=degrees, expand=expand)
        ref = _rotate_reference(arr(image), degrees, expand)
        assert ours.shape == ref.shape
        # Tolerance: a sample point lying within float error of a pixel edge may round either way;
        # that touches well under 0.2 % of the pixels, all others are identical.
        assert np.any(ours != ref, axis=-1).mean() < 0.002


def test_rotate_direction_and_right_angles_are_exact():
    square = arr(IMAGES[0])
    assert_same(run("attack.rotate", IMAGES[0], degrees=90), np.rot90(square, 1))  # counter-clockwise
    assert_same(run("attack.rotate", IMAGES[0], degrees=-90), np.rot90(square, -1))
    assert_same(run("attack.rotate", IMAGES[3], degrees=180), np.rot90(arr(IMAGES[3]), 2))
    assert_same(run("attack.rotate", IMAGES[3], degrees=90, expand=True, interpolation="bilinear"),
                np.rot90(arr(IMAGES[3]), 1))
    wide = run("attack.rotate", IMAGES[3], degrees=25, interpolation="bilinear", expand=True)
    w, h = IMAGES[3].size
    t = math.radians(25)
    assert abs(wide.shape[1] - (w * math.cos(t) + h * math.sin(t))) <= 2  # the canvas holds the rotated image
    assert abs(wide.shape[0] - (w * math.sin(t) + h * math.cos(t))) <= 2


AREAS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def _ssl_sides(image: Image.Image, area: float) -> list[int]:
    """[height, width] as the SSL / active-indexing code computes them: int(side * sqrt(area))."""
    return [int(s * np.sqrt(area)) for s in image.size][::-1]


@pytest.mark.parametrize("area", AREAS)
def test_center_crop_is_torchvision_center_crop_by_area(area):
    from torchvision.transforms import functional as F

    for image in IMAGES:
        assert_same(run("attack.center_crop", image, area=area), arr(F.center_crop(image, _ssl_sides(image, area))))
        h, w = _ssl_sides(image, area)
        top, left = round((image.height - h) / 2), round((image.width - w) / 2)
        assert_same(run("attack.center_crop", image, area=area), arr(image)[top : top + h, left : left + w])


@pytest.mark.parametrize("area", AREAS)
def test_resize_is_torchvision_resize_by_area(area):
    from torchvision.transforms import functional as F

    for image in IMAGES:
        ours = run("attack.resize", image, area=area)
        assert_same(ours, arr(F.resize(image, _ssl_sides(image, area))))
        # Independent implementation: torchvision's antialiased bilinear on tensors. Tolerance 1 level:
        # it accumulates in float and rounds where PIL uses fixed point (about 1 value in 6 differs by 1).
        tensor = F.resize(F.pil_to_tensor(image), _ssl_sides(image, area), antialias=True)
        assert_close(ours, tensor.permute(1, 2, 0).numpy(), max_abs=1)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9, 1.0])
def test_crop_side_is_markdiffusion_crop_by_side(ratio):
    for image in IMAGES:
        w, h = int(image.width * ratio), int(image.height * ratio)
        left, top = (image.width - w) // 2, (image.height - h) // 2
        assert_same(run("attack.crop_side", image, ratio=ratio), arr(image)[top : top + h, left : left + w])
        scaled = image.crop((left, top, left + w, top + h)).resize(image.size)  # MarkDiffusion's CrSc
        assert_same(run("attack.crop_side", image, ratio=ratio, resize_back=True), arr(scaled))


@pytest.mark.parametrize("area", [0.3, 0.5, 0.8, 1.0])
def test_resized_crop_is_torchvision_resized_crop_at_the_drawn_corner(area):
    from torchvision.transforms import functional as F

    for image in IMAGES:
        side = min(image.width, image.height, round(math.sqrt(area * image.width * image.height)))
        tops, lefts = set(), set()
        for seed in range(6):
            # The corner is drawn from the item's rng, row first then column, uniformly over the
            # positions where the square fits (the documented draw order, which makes it reproducible).
            draw = np.random.default_rng(seed)
            top, left = int(draw.integers(0, image.height - side + 1)), int(draw.integers(0, image.width - side + 1))
            ref = F.resized_crop(image, top, left, side, side, [image.height, image.width])  # WAVES' call
            assert_same(run("attack.resized_crop", image, seed, area=area), arr(ref))
            tops.add(top)
            lefts.add(left)
        if side < image.height:
            assert len(tops) > 1
        if side < image.width:
            assert len(lefts) > 1


def test_hflip_mirrors():
    from torchvision.transforms import functional as F

    for image in IMAGES:
        assert_same(run("attack.hflip", image), arr(image)[:, ::-1])
        assert_same(run("attack.hflip", image), arr(F.hflip(image)))


# --- filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 11, 15, 19])
def test_blur_is_torchvision_gaussian_blur(kernel):
    import torch
    from torchvision.transforms import functional as F

    for image in IMAGES:
        ours = run("attack.blur", image, kernel=kernel)
        # Same definition at the same precision: torchvision's 2-D convolution in float64 (its default
        # sigma is 0.15 k + 0.35), rounded half to even.
        t = F.pil_to_tensor(image).to(torch.float64)
        ref = torch.round(F.gaussian_blur(t, [kernel, kernel])).clamp(0, 255).permute(1, 2, 0).numpy()
        assert_same(ours, ref)
        # On a PIL image torchvision computes in float32: one level apart where the exact value is within
        # float32 error of a half, which is rare (< 0.1 % of the values).
        assert_close(ours, arr(F.gaussian_blur(image, kernel)), max_abs=1, max_frac=0.001)
    assert attack("attack.blur", kernel=11).operations()[0]["sigma"] == pytest.approx(2.0)


def _box_blur_line(x: np.ndarray, radius: np.float32) -> np.ndarray:
    """One pass of PIL's extended box blur along the last axis, in PIL's 8.24 fixed point: the window
    [x - r, x + r] at weight ww, the two pixels just outside it at weight fw, edges replicated."""
    r = int(radius)
    ww = int(np.float32(1 << 24) / np.float32(radius * np.float32(2) + np.float32(1)))
    fw = ((1 << 24) - (2 * r + 1) * ww) // 2
    n = x.shape[-1]
    padded = x[..., np.clip(np.arange(-r - 1, n + r + 1), 0, n - 1)].astype(np.int64)
    cum = np.concatenate([np.zeros(padded.shape[:-1] + (1,), np.int64), np.cumsum(padded, axis=-1)], axis=-1)
    window = cum[..., 2 * r + 2 : 2 * r + 2 + n] - cum[..., 1 : 1 + n]
    outside = padded[..., :n] + padded[..., 2 * r + 2 : 2 * r + 2 + n]
    return ((window * ww + outside * fw + (1 << 23)) >> 24).astype(np.uint8)


def _pil_gaussian_reference(a: np.ndarray, radius: float) -> np.ndarray:
    """PIL's GaussianBlur as its documentation and source define it: the box radius that gives a variance
    of radius^2 in 3 passes (Gwosdek et al. 2011, in float32), 3 passes per axis, 8-bit between passes."""
    f32 = np.float32
    sigma2 = f32(f32(radius) * f32(radius) / f32(3))
    length = f32(math.sqrt(12.0 * float(sigma2) + 1.0))
    l = f32(math.floor((float(length) - 1.0) / 2.0))
    frac = f32(f32(2) * l + f32(1)) * f32(l * f32(l + f32(1)) - f32(3) * sigma2)
    box = f32(l + f32(frac / f32(f32(6) * f32(sigma2 - f32(l + f32(1)) * f32(l + f32(1))))))
    x = a.transpose(2, 0, 1)
    if box != 0:
        for axis_first in (True, False):
            x = x if axis_first else x.transpose(0, 2, 1)
            for _ in range(3):
                x = _box_blur_line(x, box)
            x = x if axis_first else x.transpose(0, 2, 1)
    return x.transpose(1, 2, 0)


@pytest.mark.parametrize("radius", [0, 0.5, 1, 2, 3, 5, 7, 9, 2.7, 20])
def test_blur_radius_is_pil_gaussian_blur(radius):
    tiny = IMAGES[3].resize((17, 11))  # radius larger than the image: edges replicated throughout
    for image in IMAGES + [tiny]:
        assert_same(run("attack.blur_radius", image, radius=radius), _pil_gaussian_reference(arr(image), radius))
    assert_same(run("attack.blur_radius", IMAGES[0], radius=0), arr(IMAGES[0]))


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_median_is_the_windowed_median_with_replicated_edges(kernel):
    from numpy.lib.stride_tricks import sliding_window_view

    for image in IMAGES:
        half = kernel // 2
        padded = np.pad(arr(image), ((half, half), (half, half), (0, 0)), mode="edge")
        windows = sliding_window_view(padded, (kernel, kernel), axis=(0, 1))
        ref = np.median(windows.reshape(*windows.shape[:3], -1), axis=-1)  # odd count: an exact value
        assert_same(run("attack.median", image, kernel=kernel), ref.astype(np.uint8))


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3, 0.5, 1.0])
def test_pixelize_is_augly_pixelization(ratio):
    import augly.image.functional as A

    for image in IMAGES:
        assert_same(run("attack.pixelize", image, ratio=ratio), arr(A.pixelization(image, ratio=ratio)))


# --- noise and erasing (randomness from the rng) ---------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.05, 0.1, 0.5])
def test_noise_is_waves_gaussian_noise_drawn_from_the_rng(sigma):
    for image in IMAGES:
        a = arr(image)
        z = np.random.default_rng(7).standard_normal(a.shape)  # the draws the attack must make
        # WAVES / W-Bench: ToTensor (v / 255, float32), + sigma z, clamp to [0, 1], ToPILImage (x 255,
        # truncated). Tolerance: float32 versus float64 move a value across an integer on < 0.1 %.
        x = a.astype(np.float32) / np.float32(255) + (np.float32(sigma) * z.astype(np.float32))
        waves = (np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8)
        assert_close(run("attack.noise", image, 7, sigma=sigma), waves, max_abs=1, max_frac=0.001)
        rounded = np.clip(np.rint(a + 255.0 * sigma * z), 0, 255)
        assert_same(run("attack.noise", image, 7, sigma=sigma, rounding="round"), rounded)
    assert_same(run("attack.noise", IMAGES[0], sigma=0.0), arr(IMAGES[0]))


def test_noise_has_the_stated_standard_deviation():
    grey = Image.new("RGB", (200, 200), (128, 128, 128))  # far from 0 and 255: nothing is clipped
    residual = run("attack.noise", grey, 3, sigma=0.05, rounding="round").astype(np.float64) - 128
    assert residual.std() == pytest.approx(0.05 * 255, rel=0.02)
    assert abs(residual.mean()) < 0.1
    floor = run("attack.noise", grey, 3, sigma=0.05).astype(np.float64) - 128
    assert floor.mean() == pytest.approx(-0.5, abs=0.1)  # truncation's bias, as in WAVES


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_erase_blacks_out_one_square_of_the_stated_area(fraction):
    for image in IMAGES:
        a = arr(image)
        side = min(image.width, image.height, round(math.sqrt(fraction * image.width * image.height)))
        corners = set()
        for seed in range(5):
            out = run("attack.erase", image, seed, fraction=fraction)
            changed = np.any(out != a, axis=-1)
            if side == 0:
                assert not changed.any()
                continue
            rows, cols = np.nonzero(changed)
            # Locate the square by its changed pixels, then check the definition over the whole image.
            top = min(rows.min(), image.height - side) if len(rows) else 0
            left = min(cols.min(), image.width - side) if len(cols) else 0
            expected = a.copy()
            expected[top : top + side, left : left + side] = 0
            if not np.array_equal(out, expected):  # pixels already black at the square's edge: search it
                hits = [(i, j) for i in range(image.height - side + 1) for j in range(image.width - side + 1)
                        if not out[i : i + side, j : j + side].any()
                        and np.array_equal(np.where(_square(a.shape, i, j, side)[..., None], 0, a), out)]
                assert hits, "the output is not the image with one black square"
                top, left = hits[0]
            corners.add((top, left))
        if 0 < side < min(image.width, image.height):  # the position comes from the rng, on both axes
            assert len({t for t, _ in corners}) > 1 and len({l for _, l in corners}) > 1


def _square(shape, top, left, side):
    m = np.zeros(shape[:2], bool)
    m[top : top + side, left : left + side] = True
    return m


# --- codecs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [10, 25, 50, 80, 100])
def test_jpeg_is_augly_encoding_quality_and_libjpeg(quality):
    import augly.image.functional as A
    import torch
    from torchvision import io as tio
    from torchvision.transforms import functional as F

    for image in IMAGES:
        ours = run("attack.jpeg", image, quality=quality)
        assert_same(ours, arr(A.encoding_quality(image, quality=quality)))  # SSL / active indexing
        # An independent encoder and decoder: torchvision's own libjpeg build.
        ref = tio.decode_jpeg(tio.encode_jpeg(F.pil_to_tensor(image), quality=quality))
        assert_same(ours, ref.permute(1, 2, 0).numpy())
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)  # WAVES / W-Bench's compression
        assert_same(ours, tio.decode_jpeg(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
                    .permute(1, 2, 0).numpy())


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_webp_is_libwebp_at_the_stated_quality(quality):
    import torch
    from torchvision import io as tio

    for image in IMAGES:
        ours = run("attack.webp", image, quality=quality)
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=quality)
        # No second WebP encoder is installed; the bitstream PIL's encoder wrote at this quality is
        # decoded by an independent decoder (torchvision's libwebp build) and must give the same pixels.
        ref = tio.decode_webp(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
        assert_same(ours, ref.permute(1, 2, 0).numpy())


def test_lower_quality_costs_psnr():
    def psnr(a, b):
        return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))

    a = arr(IMAGES[3])
    for name in ("attack.jpeg", "attack.webp"):
        values = [psnr(run(name, IMAGES[3], quality=q), a) for q in (10, 50, 90)]
        assert values[0] < values[1] < values[2], (name, values)


# --- colour -----------------------------------------------------------------------------------------


def _luma(a: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, i.e. 0.299 R + 0.587 G + 0.114 B rounded."""
    a = a.astype(np.int64)
    return (a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """PIL's Image.blend in float32: degenerate + factor (image - degenerate), clipped, truncated."""
    d = degenerate.astype(np.float32)
    t = np.float32(factor) * (image.astype(np.float32) - d) + d
    return np.clip(t, 0, 255).astype(np.uint8)


def _smooth(a: np.ndarray) -> np.ndarray:
    """PIL's SMOOTH filter: [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded; border pixels unchanged."""
    k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13
    x = a.astype(np.float64)
    acc = sum(k[i, j] * x[i : i + x.shape[0] - 2, j : j + x.shape[1] - 2] for i in range(3) for j in range(3))
    out = a.copy()
    out[1:-1, 1:-1] = np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)
    return out


DEGENERATE = {
    "attack.brightness": lambda a: np.zeros_like(a),
    "attack.contrast": lambda a: np.full_like(a, int(_luma(a).mean() + 0.5)),
    "attack.saturation": lambda a: np.repeat(_luma(a)[..., None], 3, axis=2).astype(np.uint8),
    "attack.sharpness": _smooth,
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.2, 1.5, 2.0])
def test_enhance_factors_match_torchvision_and_their_definition(name, factor):
    from torchvision.transforms import functional as F

    adjust = {"attack.brightness": F.adjust_brightness, "attack.contrast": F.adjust_contrast,
              "attack.saturation": F.adjust_saturation, "attack.sharpness": F.adjust_sharpness}[name]
    for image in IMAGES:
        ours = run(name, image, factor=factor)
        assert_same(ours, arr(adjust(image, factor)))
        assert_same(ours, _blend(DEGENERATE[name](arr(image)), arr(image), factor))


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """8-bit HSV (hue in 1/255 turns) to RGB in float, by the textbook sextant formula."""
    h, s, v = (hsv[..., i].astype(np.float64) / 255 for i in range(3))
    i = np.floor(h * 6) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(table):
        sel = i == k
        rgb[sel] = np.stack([r, g, b], axis=-1)[sel]
    return rgb * 255


@pytest.mark.parametrize("shift", [-0.5, -0.25, 0.0, 0.1, 0.2, 0.25, 0.5])
def test_hue_is_torchvision_adjust_hue(shift):
    from torchvision.transforms import functional as F

    for image in IMAGES:
        ours = run("attack.hue", image, shift=shift)
        assert_same(ours, arr(F.adjust_hue(image, shift)))
        # The definition step by step: 8-bit hue + int(shift x 255) mod 256, then HSV -> RGB by the formula
        # (not PIL's). Tolerance 0.5: PIL's conversion rounds the exact value to an integer.
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(shift * 255)) % 256
        assert_close(ours, _hsv_to_rgb(hsv), max_abs=0.5)


def test_grayscale_is_pil_luma_in_three_channels():
    from torchvision.transforms import functional as F

    for image in IMAGES:
        ours = run("attack.grayscale", image)
        assert_same(ours, np.repeat(_luma(arr(image))[..., None], 3, axis=2))
        assert_same(ours, arr(F.rgb_to_grayscale(image, num_output_channels=3)))


# --- overlays and layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"text": "Hello World", "font": "IBMPlexSans-Bold.ttf", "font_size": 0.3,
                                         "color": [10, 200, 30], "x_pos": 0.2, "y_pos": 0.1}])
def test_overlay_text_is_augly_overlay_text_with_a_fixed_string(params):
    import augly.image.functional as A
    from augly import utils

    a = attack("attack.overlay_text", **params)
    from harness.safe_pickle import loads_plain

    with open(os.path.join(utils.FONTS_DIR, a.font[:-4] + ".pkl"), "rb") as f:
        chars = loads_plain(f.read())  # AugLy's per-font character list: a pickled list of ints
    indices = [chars.index(ord(c)) for c in a.text]  # AugLy takes the text as indices into that list
    font_path = os.path.join(utils.FONTS_DIR, a.font)
    for image in IMAGES:
        ours = np.asarray(a(image, RNG))
        augly = A.overlay_text(image, text=indices, font_file=font_path, font_size=a.font_size, color=a.color,
                               x_pos=a.x_pos, y_pos=a.y_pos)
        assert_same(ours, arr(augly))
        # Independently: the text's coverage mask composited in float. Tolerance 0.5 (PIL rounds).
        w, h = image.size
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).text((a.x_pos * w, a.y_pos * h), a.text, fill=255,
                                  font=ImageFont.truetype(font_path, int(min(w, h) * a.font_size)))
        m = np.asarray(mask, dtype=np.float64)[..., None] / 255
        assert m.mean() > 0.01  # the text is really drawn
        assert_close(ours, arr(image) * (1 - m) + np.array(a.color) * m, max_abs=0.5)


def _emoji_reference(image: Image.Image, emoji: str, size: float, opacity: float, x_pos: float, y_pos: float):
    """AugLy's overlay_image arithmetic in numpy: emoji height = int(H x size) (nearest resize, it is a
    palette image), alpha x opacity truncated, pasted at (int(W x x_pos), int(H x y_pos)) with PIL's
    rounded division by 255."""
    from augly import utils

    w, h = image.size
    em = Image.open(os.path.join(utils.EMOJI_DIR, emoji))
    eh = max(1, int(h * size))
    ew = int(em.width * eh / em.height)
    e = np.asarray(em.resize((ew, eh), Image.Resampling.NEAREST).convert("RGBA")).astype(np.int64)
    alpha = (e[..., 3].astype(np.float64) * opacity).astype(np.int64)[..., None]
    out = arr(image).astype(np.int64).copy()
    x, y = int(w * x_pos), int(h * y_pos)
    ph, pw = min(eh, h - y), min(ew, w - x)
    region = out[y : y + ph, x : x + pw]
    t = e[:ph, :pw, :3] * alpha[:ph, :pw] + region * (255 - alpha[:ph, :pw]) + 128
    out[y : y + ph, x : x + pw] = ((t >> 8) + t) >> 8
    return out


@pytest.mark.parametrize("params", [{}, {"size": 0.4, "opacity": 0.6, "x_pos": 0.1, "y_pos": 0.2},
                                    {"emoji": "animals_and_nature/dog_face.png", "size": 0.5, "x_pos": 0.9, "y_pos": 0.9}])
def test_overlay_emoji_is_augly_overlay_emoji(params):
    a = attack("attack.overlay_emoji", **params)
    for image in IMAGES:
        assert_same(np.asarray(a(image, RNG)), _emoji_reference(image, a.emoji, a.size, a.opacity, a.x_pos, a.y_pos))


def _pillow9_getsize_multiline(self, text, direction=None, spacing=4, features=None, language=None, stroke_width=0):
    """FreeTypeFont.getsize_multiline as Pillow < 10 defined it (AugLy's meme_format calls it): widest
    line's right edge; line spacing = height of "A" + spacing. Sizes from the glyph mask and its offset."""

    def size(line):
        mask, (ox, oy) = self.getmask2(line)
        return mask.size[0] + ox, mask.size[1] + oy

    lines = text.split("\n")
    return max(size(line)[0] for line in lines), len(lines) * (size("A")[1] + spacing) - spacing


@pytest.mark.parametrize("params", [{}, {"text": "When you see it", "caption_height": 80},
                                    {"text": "OK", "caption_height": 40}])
def test_meme_is_augly_meme_format(params, monkeypatch):
    import augly.image.functional as A

    monkeypatch.setattr(ImageFont.FreeTypeFont, "getsize_multiline", _pillow9_getsize_multiline, raising=False)
    for image in IMAGES + [IMAGES[3].resize((451, 301))]:
        ours = run("attack.meme", image, **params)
        assert_same(ours, arr(A.meme_format(image, **params)))
        assert ours.shape[0] == image.height + params.get("caption_height", 250)


@pytest.mark.parametrize("template", ["web", "mobile"])
@pytest.mark.parametrize("crop", [False, True])
def test_screenshot_is_the_image_in_the_template_box(template, crop):
    from augly import utils

    base = Image.open(os.path.join(utils.SCREENSHOT_TEMPLATES_DIR, f"{template}.png")).convert("RGB")
    with open(utils.BBOXES_PATH) as f:
        left, top, right, bottom = json.load(f)[f"{template}.png"]
    bw, bh = right - left, bottom - top
    for image in IMAGES:
        # AugLy's documented layout: scale to fit the box (Lanczos down, bilinear up), crop the excess
        # (crop_src_to_fit) or pad with black, centred; paste into the template at its box.
        w, h = image.size
        f = min(bw / w, bh / h)
        src = image.resize((int(w * f), int(h * f)), Image.Resampling.LANCZOS if f < 1 else Image.Resampling.BILINEAR)
        if crop:
            dx, dy = (src.width - bw) // 2, (src.height - bh) // 2
            src = src.crop((dx, dy, dx + bw, dy + bh))
        box = np.zeros((bh, bw, 3), np.uint8)
        s = arr(src)[:bh, :bw]
        oy, ox = max(0, (bh - s.shape[0]) // 2), max(0, (bw - s.shape[1]) // 2)
        box[oy : oy + s.shape[0], ox : ox + s.shape[1]] = s
        ref = arr(base).copy()
        ref[top:bottom, left:right] = box
        assert_same(run("attack.screenshot", image, template=template, crop_src_to_fit=crop), ref)


def test_screenshot_default_is_augly_default_template():
    import augly.image.functional as A

    # SSL watermarking and active indexing call overlay_onto_screenshot(img) with no argument.
    assert_same(run("attack.screenshot", IMAGES[0]), arr(A.overlay_onto_screenshot(IMAGES[0])))


# --- chains and determinism -------------------------------------------------------------------------


def test_stable_signature_combination_is_a_chain_of_three_attacks():
    from torchvision.transforms import functional as F

    chain = Chain([attack("attack.center_crop", area=0.5), attack("attack.brightness", factor=1.5),
                   attack("attack.jpeg", quality=80)])
    assert chain.operations() == [{"op": "center_crop", "area": 0.5}, {"op": "brightness", "factor": 1.5},
                                  {"op": "jpeg", "quality": 80}]
    check_attack(chain)
    for image in IMAGES:
        by_hand = F.center_crop(image, _ssl_sides(image, 0.5))
        by_hand = ImageEnhance.Brightness(by_hand).enhance(1.5)
        buffer = io.BytesIO()
        by_hand.save(buffer, format="JPEG", quality=80)
        assert_same(np.asarray(chain(image, RNG)), arr(Image.open(buffer)))


def test_a_chain_passes_the_rng_on():
    chain = Chain([attack("attack.erase", fraction=0.1), attack("attack.noise", sigma=0.05)])
    check_attack(chain, uses_rng=True)
    rng = np.random.default_rng(5)
    first = attack("attack.erase", fraction=0.1)(IMAGES[0], rng)
    by_hand = attack("attack.noise", sigma=0.05)(first, rng)
    assert_same(np.asarray(chain(IMAGES[0], np.random.default_rng(5))), np.asarray(by_hand))


CASES = [(name, EXAMPLE_PARAMS.get(name, {})) for name in sorted(ATTACKS)] + [
    ("attack.rotate", {"degrees": 90, "interpolation": "bilinear", "expand": True}),
    ("attack.blur", {"kernel": 19}), ("attack.hue", {"shift": -0.5}), ("attack.jpeg", {"quality": 10}),
    ("attack.screenshot", {"template": "mobile"}), ("attack.noise", {"sigma": 0.1, "rounding": "round"}),
]

_HASH_SCRIPT = """
import hashlib, io, json, sys
import numpy as np
from harness.testing import sample_images
from harness_plugins.attacks.catalog import ATTACKS
image = sample_images(1, 96)[0]
out = []
for name, params in json.loads(sys.argv[1]):
    result = ATTACKS[name](**params)(image, np.random.default_rng(11))
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    out.append(hashlib.sha256(buffer.getvalue()).hexdigest())
print(json.dumps(out))
"""


def test_outputs_are_the_same_bytes_in_another_process():
    expected = []
    for name, params in CASES:
        result = ATTACKS[name](**params)(sample_images(1, 96)[0], np.random.default_rng(11))
        buffer = io.BytesIO()
        result.save(buffer, format="PNG")
        expected.append(hashlib.sha256(buffer.getvalue()).hexdigest())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env["PYTHONHASHSEED"] = "123"  # a different hash seed and a fresh import of augly (its random draw)
    proc = subprocess.run([sys.executable, "-c", _HASH_SCRIPT, json.dumps(CASES)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected


def test_attacks_leave_global_random_state_alone():
    import random

    import augly.image.functional  # noqa: F401 - augly draws from Python's random once, at import

    py, npy = random.getstate(), np.random.get_state()
    for name, params in CASES:
        attack(name, **params)(IMAGES[0], np.random.default_rng(0))
    assert random.getstate() == py
    after = np.random.get_state()
    assert after[0] == npy[0] and np.array_equal(after[1], npy[1]) and after[2:] == npy[2:]
