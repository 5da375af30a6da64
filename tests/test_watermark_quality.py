"""Image quality metrics: PSNR over RGB 0-255 and scikit-image SSIM, per cell."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from harness.errors import UserError
from harness.testing import sample_images
from harness_plugins.watermark.quality import PSNR, SSIM, ImagePairs, psnr, ssim


def slow_psnr(a, b):
    total = 0.0
    for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
        total += (x - y) ** 2
    mse = total / a.size
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_psnr_matches_slow(h, w, seed, spread):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-spread, spread + 1, a.shape), 0, 255).astype(np.uint8)
    got, want = psnr(a, b), slow_psnr(a, b)
    assert (math.isinf(got) and math.isinf(want)) or got == pytest.approx(want, rel=1e-12)


def test_ssim_is_skimage_with_stated_settings():
    a, b = (np.asarray(im) for im in sample_images(2, 64))
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    uniform = structural_similarity(a, noisy, channel_axis=2, data_range=255)
    gauss = structural_similarity(a, noisy, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(a, noisy) == uniform and ssim(a, noisy, gaussian_weights=True) == gauss and uniform != gauss
    assert ssim(a, a) == 1.0 and ssim(a, b) < 0.5
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(a[:8, :20], a[:8, :20], gaussian_weights=True)


def test_metrics_per_cell():
    orig = sample_images(3, 32)
    marked = [orig[0], orig[1].point(lambda v: min(255, v + 2)), orig[2].point(lambda v: min(255, v + 4))]
    pairs = ImagePairs(["a", "b", "c"], ["w1", "w2", "w2"], orig, marked)
    out = PSNR()(None, pairs)
    assert list(out) == ["w1", "w2"]
    assert out["w1"] == {"psnr": None, "psnr_min": None, "n": 1, "identical": 1}  # identical: infinite PSNR
    want = [psnr(orig[i], marked[i]) for i in (1, 2)]
    assert out["w2"]["psnr"] == pytest.approx(np.mean(want)) and out["w2"]["psnr_min"] == min(want)
    s = SSIM(gaussian_weights=True)
    assert "gaussian" in s.protocol and "uniform7" in SSIM().protocol
    v = s(None, pairs)
    assert v["w1"]["ssim"] == 1.0 and v["w2"]["n"] == 2
    with pytest.raises(UserError, match="image 'x': the marked image is 16x32"):
        PSNR()(None, ImagePairs(["x"], "w", [orig[0]], [orig[0].resize((16, 32))]))
    with pytest.raises(ValueError, match="differ in length"):
        ImagePairs(["x", "y"], "w", [orig[0]], [orig[0]])
