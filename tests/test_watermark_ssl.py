"""SSL watermarking on a random-initialised timm test network (labelled as such), on CPU.

A random network's features are dominated by one common direction, which the paper's PCA whitening
removes; the marking tests use a whitening fitted here on other crops of the sample images (the
whitening file path is what is under test), as the paper whitens its DINO features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.errors import UserError
from harness.testing import check_watermarker, sample_images
from harness_plugins.watermark.quality import psnr
from harness_plugins.watermark.ssl import SSLWatermarker
from harness_plugins.watermark.stats import hypercone_threshold

MODEL = "test_efficientnet"  # timm's tiny test network: 256-d features, fast on CPU


def marker(**kw) -> SSLWatermarker:
    return SSLWatermarker(model=MODEL, device="cpu", **kw)


@pytest.fixture(scope="module")
def images():
    return sample_images(4, 64)


@pytest.fixture(scope="module")
def whitening(tmp_path_factory):
    """PCA whitening to 32 dimensions, fitted on 196 other crops of the sample images."""
    import torch

    m = marker()
    train = sample_images(200, 64)[4:]
    with torch.no_grad():
        f = m.features(m._to_tensor(train)).double().numpy()
    mu = f.mean(0)
    ev, vecs = np.linalg.eigh(np.cov((f - mu).T))
    top = np.argsort(ev)[::-1][:32]
    w = (vecs[:, top] / np.sqrt(ev[top])).T
    path = tmp_path_factory.mktemp("whitening") / "pca32.npz"
    np.savez(path, weight=w.astype(np.float32), bias=(-w @ mu).astype(np.float32))
    return str(path)


def test_contract_and_identity(images):
    m = marker(steps=2)
    check_watermarker(m, images[0])
    assert "random_init(seed=0)" in m.fingerprint() and "random_init" in m.backbone_label
    assert m.message(5) is None and m.carriers(5).shape == (1, m.dim)
    mb = marker(bits=8)
    assert mb.message(5).shape == (8,) and np.allclose(mb.carriers(5) @ mb.carriers(5).T, np.eye(8), atol=1e-12)


def test_zero_bit_marks_are_detected(images, whitening):
    m = marker(whitening=whitening, steps=10, psnr=36.0, augment=False)
    keys = [11, 12, 13, 14]
    marked = m.embed_batch(images, keys)
    for orig, out in zip(images, marked):
        assert out.size == orig.size and out.mode == "RGB"
        assert psnr(orig, out) >= 36.0 - 0.3  # the clip aims at the target; 8-bit rounding adds a little
    on, off = m.detect_batch(marked, keys), m.detect_batch(images, keys)
    assert m.dim == 32
    assert all(a.score > b.score for a, b in zip(on, off))
    assert sum(d.p_value < 1e-6 for d in on) >= 3 and all(d.p_value > 1e-3 for d in off)
    # score and p-value agree with the threshold of the same dimension
    c = hypercone_threshold(32, 1e-6)
    assert all((d.score >= c) == (d.p_value <= 1e-6) for d in on + off)


def test_multi_bit_message_is_decoded(images, whitening):
    m = marker(whitening=whitening, bits=16, steps=10, augment=False)
    keys = [21, 22, 23, 24]
    marked = m.embed_batch(images, keys)
    assert all(psnr(o, x) >= 42.0 - 0.3 for o, x in zip(images, marked))
    on = m.detect_batch(marked, keys)
    for d, k in zip(on, keys):
        assert d.score == float((d.bits == m.message(k)).sum()) and d.score >= 14  # of 16 bits
        assert d.p_value == pytest.approx(stats.binom.sf(d.score - 1, 16, 0.5), rel=1e-12)
    assert np.mean([d.score for d in on]) >= 15
    assert np.mean([d.score for d in m.detect_batch(images, keys)]) < 11


def test_marking_is_deterministic_and_key_dependent(images):
    m = marker(steps=3, bits=4, lambda_i=0.0)
    a = np.asarray(m.embed(images[0], 7))
    assert np.array_equal(a, np.asarray(marker(steps=3, bits=4, lambda_i=0.0).embed(images[0], 7)))
    assert not np.array_equal(a, np.asarray(m.embed(images[0], 8)))
    assert not np.array_equal(a, np.asarray(images[0]))


def test_batches_group_sizes_and_match_single_images(images):
    m = marker(steps=2, lambda_i=0.0, batch_size=3)
    mixed = [images[0], images[1].resize((80, 48)), images[2], images[3].resize((80, 48))]
    keys = [1, 2, 3, 4]
    batch = m.embed_batch(mixed, keys)
    assert [b.size for b in batch] == [im.size for im in mixed]
    for im, k, b in zip(mixed, keys, batch):
        single = np.asarray(m.embed(im, k)).astype(int)
        diff = np.abs(single - np.asarray(b).astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float summation order only
    det_batch, det_single = m.detect_batch(batch, keys), [m.detect(b, k) for b, k in zip(batch, keys)]
    for x, y in zip(det_batch, det_single):
        assert x.score == pytest.approx(y.score, abs=1e-5) and x.p_value == pytest.approx(y.p_value, rel=1e-3)


def test_hypercone_fpr_on_unmarked_images_with_random_keys(images):
    """2,000 (image, key) pairs of unmarked images: the fraction with p <= 0.05 is within the 99.9%
    binomial confidence interval of 0.05 (the carrier of each key is uniform, whatever the image)."""
    m = marker()
    feats = m.detect_features(images)
    n_keys = 500
    keys = list(range(1000, 1000 + n_keys))
    p = np.array([d.p_value for f in feats for d in m.decide(np.repeat(f[None], n_keys, 0), keys)])
    flagged = int((p <= 0.05).sum())
    lo, hi = stats.binomtest(flagged, len(p), 0.05).proportion_ci(confidence_level=0.999)
    assert lo <= 0.05 <= hi


def test_psnr_clip_hits_the_target_exactly():
    import torch

    from harness_plugins.watermark.ssl_marking import psnr_clip

    std255 = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 16, 16, generator=g)
    big = x0 + 0.2 * torch.randn(2, 3, 16, 16, generator=g)
    small = x0 + 1e-4 * torch.randn(2, 3, 16, 16, generator=g)
    for x, want in ((big, None), (small, "unchanged")):
        y = psnr_clip(x, x0, std255, 40.0)
        mse = (((y - x0) * std255) ** 2).mean(dim=(1, 2, 3))
        got = 10 * torch.log10(255.0**2 / mse)
        if want is None:
            assert torch.allclose(got, torch.tensor(40.0), atol=1e-3)
        else:
            assert torch.equal(y, x)


def test_augmentations_are_seeded_and_shaped():
    import torch

    from harness_plugins.watermark.ssl_marking import KINDS, augment, output_shape, sample_augmentation

    rng = np.random.default_rng(0)
    augs = [sample_augmentation(rng, 40, 56) for _ in range(300)]
    again = np.random.default_rng(0)
    assert augs == [sample_augmentation(again, 40, 56) for _ in range(300)]
    assert {a.kind for a in augs} == set(KINDS) and 100 < sum(a.flip for a in augs) < 200
    assert all(a.param % 2 == 1 and 1 <= a.param <= 17 for a in augs if a.kind == "blur")
    x = torch.randn(1, 3, 40, 56, requires_grad=True)
    for a in augs[:40]:
        y = augment(x, a)
        assert tuple(y.shape[-2:]) == tuple(output_shape(a, 40, 56))
        y.sum().backward()  # differentiable
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_whitening_files(tmp_path, images):
    d = marker().dim
    w = np.random.default_rng(0).standard_normal((8, d)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    m = marker(whitening=str(tmp_path / "w.npy"))
    assert m.dim == 8 and "whitening-sha256=" in m.fingerprint()
    from safetensors.numpy import save_file

    save_file({"weight": w, "bias": np.ones(8, dtype=np.float32)}, str(tmp_path / "w.safetensors"))
    assert marker(whitening=str(tmp_path / "w.safetensors")).dim == 8
    np.save(tmp_path / "bad.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="not a readable whitening file"):
        marker(whitening=str(tmp_path / "bad.npy"))
    np.savez(tmp_path / "other.npz", proj=w)
    with pytest.raises(UserError, match="expected arrays 'weight'"):
        marker(whitening=str(tmp_path / "other.npz"))
    np.save(tmp_path / "wrong.npy", w[:, :5])
    with pytest.raises(UserError, match="takes 5-d input"):
        marker(whitening=str(tmp_path / "wrong.npy")).dim
    np.save(tmp_path / "nan.npy", np.full((2, d), np.nan, dtype=np.float32))
    with pytest.raises(UserError, match="NaN"):
        marker(whitening=str(tmp_path / "nan.npy"))
    with pytest.raises(UserError, match="not found"):
        marker(whitening=str(tmp_path / "missing.npy"))


def test_bad_parameters():
    with pytest.raises(UserError, match="fpr"):
        marker(fpr=0.0)
    with pytest.raises(UserError, match="whitening_scale needs"):
        marker(whitening_scale=2.0)
    with pytest.raises(UserError, match="carriers do not fit"):
        marker(bits=1000).dim
    with pytest.raises(UserError, match="unknown timm model"):
        SSLWatermarker(model="resnet5o", device="cpu")
    assert math.isfinite(hypercone_threshold(256, 1e-6))


def test_size_groups_bound_images_and_pixels():
    from PIL import Image

    from harness_plugins.watermark.batching import size_groups

    ims = [Image.new("RGB", s) for s in [(4, 4), (8, 2), (4, 4), (4, 4), (8, 2), (100, 100)]]
    assert size_groups(ims, 2) == [[0, 2], [3], [1, 4], [5]]
    assert size_groups(ims, 8, max_pixels=32) == [[0, 2], [3], [1, 4], [5]]  # 2 images of 16 px; one too large still goes alone
    assert marker().max_batch_pixels == 512 * 512 and marker(max_batch_pixels=10).max_batch_pixels == 10
