"""AugLy transforms: every exposed op on a real photograph, seeded, offline, deterministic."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
from PIL import Image

from harness.errors import UserError
from harness_plugins.augly import transforms as T
from harness_plugins.augly.transforms import TRANSFORMS

#: Ops whose output does not depend on the rng.
DETERMINISTIC = {"augly.hflip", "augly.vflip"}


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import augly.image.functional  # noqa: F401 - augly draws from Python's random once, at import time
    import skimage.data

    im = Image.fromarray(skimage.data.chelsea())  # 451 x 300, ships inside the wheel
    return im.resize((180, 120), Image.Resampling.BILINEAR)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def run(name: str, image: Image.Image, seed: int, **params) -> Image.Image:
    return TRANSFORMS[name](**params)(image.copy(), np.random.default_rng(seed))


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_op_returns_rgb_and_is_reproducible(name, photo):
    before_np, before_py = np.random.get_state(), random.getstate()
    out = run(name, photo, 0)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and min(out.size) >= 1
    assert same(out, run(name, photo, 0)), "same rng seed must give the same pixels"
    # No hidden randomness: the global generators are neither used nor reseeded.
    assert random.getstate() == before_py
    after_np = np.random.get_state()
    assert before_np[0] == after_np[0] and np.array_equal(before_np[1], after_np[1]) and before_np[2:] == after_np[2:]
    if name in DETERMINISTIC:
        assert same(out, run(name, photo, 1))
    else:
        assert any(not same(out, run(name, photo, s)) for s in range(1, 6)), "seeds should change the output"


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_op_meets_the_plugin_contract(name, photo):
    from harness.testing import check_transform

    check_transform(TRANSFORMS[name](), photo, seed=5)  # RGB out, deterministic, input left untouched
    assert run(name, photo.convert("L"), 3).mode == "RGB"


def test_registered_through_the_plugin_hook():
    import harness_plugins.augly
    from harness.testing import registry_with

    registry = registry_with(harness_plugins.augly)
    assert set(TRANSFORMS) <= set(registry.names("transform"))


def test_every_factory_is_versioned_documented_and_typed():
    import typing

    from harness.params import check_params

    for name, factory in TRANSFORMS.items():
        assert name.startswith("augly.")
        assert getattr(factory, "version", None) == "1", name
        assert (factory.__doc__ or "").strip(), name
        typing.get_type_hints(factory.__init__)  # the spec validator can resolve every annotation
        assert check_params(factory, {})[1] == [], name  # defaults alone are valid
    _, problems = check_params(TRANSFORMS["augly.crop"], {"min_area": "big", "max_aera": 0.5})
    assert {p.param for p in problems} == {"min_area", "max_aera"}


def test_ops_change_the_image_as_intended(photo):
    assert same(run("augly.hflip", photo, 0), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    crop = run("augly.crop", photo, 0, min_area=0.25, max_area=0.25, max_aspect_change=1.0)
    assert abs(crop.width * crop.height / (180 * 120) - 0.25) < 0.03
    assert run("augly.pad_square", photo, 0).size == (180, 180)
    grey = np.asarray(run("augly.grayscale", photo, 0)).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1
    screenshot = run("augly.overlay_onto_screenshot", photo, 0)
    assert screenshot.size != photo.size  # the template is the canvas


def test_jpeg_quality_range_is_respected(photo):
    strong = run("augly.jpeg", photo, 0, min_quality=5, max_quality=5)
    weak = run("augly.jpeg", photo, 0, min_quality=95, max_quality=95)
    diff = lambda im: np.abs(np.asarray(im, dtype=float) - np.asarray(photo, dtype=float)).mean()  # noqa: E731
    assert diff(strong) > diff(weak) > 0


def test_meme_format_replacement(photo):
    # AugLy 1.0 calls FreeTypeFont.getsize_multiline, gone since Pillow 10: ours must work here.
    out = run("augly.meme_format", photo, 2, min_caption=0.3, max_caption=0.3, random_colors=False)
    band = round(0.3 * photo.height)
    assert out.size == (photo.width, photo.height + band)
    assert same(out.crop((0, band, photo.width, out.height)), photo), "the photo sits untouched under the band"
    caption = np.asarray(out.crop((0, 0, photo.width, band)))
    assert (caption == 255).all(axis=2).mean() > 0.5, "mostly white background"
    assert (caption < 100).all(axis=2).any(), "black text drawn in the band"


def test_meme_text_fits_in_narrow_images():
    narrow = Image.new("RGB", (40, 200), (30, 60, 90))
    out = T.meme(narrow, "THAT FEELING", 60, (255, 255, 255), (0, 0, 0))
    caption = np.asarray(out.crop((0, 0, 40, 60)))
    dark = np.argwhere((caption < 128).all(axis=2))
    assert len(dark) > 0 and dark[:, 1].min() >= 2 and dark[:, 1].max() <= 37


def test_perspective_coefficients_map_the_corners():
    rng = np.random.default_rng(0)
    src = np.array([(0, 0), (200, 0), (200, 100), (0, 100)], dtype=float)
    dst = src + rng.normal(0, 15, size=(4, 2))
    a, b, c, d, e, f, g, h = T.perspective_coefficients(dst, src)
    x, y = dst[:, 0], dst[:, 1]
    w = g * x + h * y + 1
    np.testing.assert_allclose(np.stack([(a * x + b * y + c) / w, (d * x + e * y + f) / w], 1), src, atol=1e-8)


def test_perspective_transform_replacement(photo):
    # AugLy 1.0 uses np.float, gone in NumPy 2: ours must work and warp with the requested strength.
    flat = run("augly.perspective_transform", photo, 0, min_sigma=0.0, max_sigma=0.0)
    assert np.abs(np.asarray(flat, dtype=int) - np.asarray(photo, dtype=int)).mean() < 1.0
    warped = np.asarray(run("augly.perspective_transform", photo, 0, min_sigma=0.1, max_sigma=0.1))
    assert (warped.sum(axis=2) == 0).mean() > 0.01, "strong warps leave black borders"
    cropped = run("augly.perspective_transform", photo, 0, min_sigma=0.1, max_sigma=0.1, crop_out_black_border=True)
    assert cropped.width * cropped.height < photo.width * photo.height


def test_random_noise_and_shuffle_use_the_rng(photo):
    noisy = np.asarray(run("augly.random_noise", photo, 0, min_std=0.05, max_std=0.05), dtype=float)
    residual = (noisy - np.asarray(photo, dtype=float)) / 255
    assert 0.03 < residual.std() < 0.06
    shuffled = np.asarray(run("augly.shuffle_pixels", photo, 0, min_factor=0.5, max_factor=0.5))
    original = np.asarray(photo)
    # a permutation of pixels: same multiset of colours, about half of them moved
    assert np.array_equal(np.sort(shuffled.reshape(-1, 3), axis=0), np.sort(original.reshape(-1, 3), axis=0))
    assert 0.3 < (shuffled != original).any(axis=2).mean() <= 0.5


def test_mix_of_a_single_op_is_that_op(photo):
    mixed = run("augly.mix", photo, 4, ops=["augly.hflip"], min_ops=1, max_ops=1)
    assert same(mixed, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    both = run("augly.mix", photo, 4, ops=["augly.hflip", "augly.vflip"], min_ops=2, max_ops=2)
    assert same(both, photo.transpose(Image.Transpose.ROTATE_180))


def test_disc21_like_strength_grades_the_damage(photo):
    def damage(strength: float) -> float:
        small = photo.resize((64, 64))
        total = 0.0
        for seed in range(12):
            out = run("augly.disc21_like", photo, seed, strength=strength).resize((64, 64))
            total += np.abs(np.asarray(out, dtype=float) - np.asarray(small, dtype=float)).mean()
        return total / 12

    assert damage(0.0) < damage(0.5) < damage(1.0)


@pytest.mark.parametrize(
    "name, params",
    [
        ("augly.crop", {"min_area": 0.9, "max_area": 0.3}),
        ("augly.jpeg", {"min_quality": 0}),
        ("augly.rotate", {"max_degrees": -5.0}),
        ("augly.pil_filter", {"filters": ["NOPE"]}),
        ("augly.overlay_onto_screenshot", {"templates": ["tv.png"]}),
        ("augly.mix", {"ops": ["augly.crop", "augly.nope"]}),
        ("augly.mix", {"ops": ["augly.crop"], "weights": [1.0, 2.0]}),
        ("augly.mix", {"ops": ["augly.disc21_like"]}),
        ("augly.disc21_like", {"strength": 1.5}),
        ("augly.disc21_like", {"min_ops": 3, "max_ops": 2}),
    ],
)
def test_invalid_parameters_are_user_errors(name, params):
    with pytest.raises(UserError):
        TRANSFORMS[name](**params)


def test_assets_are_bundled():
    import os

    assets = T._assets()
    assert len(assets["fonts"]) > 10 and len(assets["emojis"]) > 100
    for path in assets["fonts"][:3] + assets["emojis"][:3] + assets["templates"] + [assets["bboxes"], assets["meme_font"]]:
        assert os.path.isfile(path), path
