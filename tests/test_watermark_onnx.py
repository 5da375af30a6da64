"""SSL detection on onnxruntime (the CPU default): the same features as torch to float32 rounding,
torch when asked or on GPU, and a fallback with its reason when the network does not export.
Random-initialised timm test network (labelled as such), CPU only."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from harness.errors import UserError
from harness.testing import sample_images
from harness_plugins.watermark.onnx_features import OnnxFeatures
from harness_plugins.watermark.ssl import SSLWatermarker

MODEL = "test_efficientnet"


@pytest.fixture(scope="module")
def images():
    return sample_images(5, 64) + sample_images(3, 48)  # two sizes: two batches


def marker(**kw) -> SSLWatermarker:
    return SSLWatermarker(model=MODEL, device="cpu", **kw)


def test_auto_on_cpu_runs_onnxruntime_with_torchs_features(images):
    on_torch, on_ort = marker(detector="torch"), marker()
    want, got = on_torch.detect_features(images), on_ort.detect_features(images)
    assert isinstance(on_ort._onnx, OnnxFeatures) and on_ort.onnx_fallback is None
    assert on_torch._onnx is None  # torch was asked for: nothing exported
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    keys = list(range(1, len(images) + 1))
    for a, b in zip(on_torch.decide(want, keys), on_ort.decide(got, keys)):
        assert b.score == pytest.approx(a.score, abs=1e-6) and b.p_value == pytest.approx(a.p_value, rel=1e-4)


def test_whitening_head_applies_on_the_onnx_path(images, tmp_path):
    d = marker().dim
    rng = np.random.default_rng(0)
    path = tmp_path / "w.npz"
    np.savez(path, weight=rng.standard_normal((16, d)).astype(np.float32), bias=rng.standard_normal(16).astype(np.float32))
    want = marker(detector="torch", whitening=str(path)).detect_features(images)
    got = marker(whitening=str(path)).detect_features(images)
    assert got.shape == (len(images), 16)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_multibit_decodes_the_same_bits(images):
    keys = list(range(10, 10 + len(images)))
    a = marker(bits=16, detector="torch").detect_batch(images, keys)
    b = marker(bits=16).detect_batch(images, keys)
    # a bit whose carrier dot is within rounding of 0 could flip; random images keep clear of it
    assert [list(x.bits) for x in a] == [list(y.bits) for y in b]


def test_export_failure_falls_back_to_torch_or_is_an_error_when_asked(images, monkeypatch):
    import torch

    def refuse(*_a, **_k):
        raise RuntimeError("exporter refuses this network")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    m = marker()
    want = marker(detector="torch").detect_features(images)
    got = m.detect_features(images)
    assert m._onnx is False and "exporter refuses this network" in m.onnx_fallback
    np.testing.assert_array_equal(got, want)  # the torch path, bit for bit
    with pytest.raises(UserError, match="detector onnxruntime: the network does not export"):
        marker(detector="onnxruntime").detect_features(images)


def test_auto_stays_on_torch_off_the_cpu(images, monkeypatch):
    class FakeDevice:
        type = "cuda"

    m = marker()
    monkeypatch.setattr(SSLWatermarker, "device", property(lambda self: FakeDevice()))
    assert m._onnx_detector(images) is None and m._onnx is None
    m2 = marker(detector="onnxruntime")
    monkeypatch.undo()
    assert isinstance(m2._onnx_detector(images), OnnxFeatures)


def test_a_marker_with_a_session_still_pickles(images):
    m = marker()
    m.detect_features(images[:1])
    clone = pickle.loads(pickle.dumps(m))
    assert clone._onnx is None  # sessions do not travel; the clone exports again on first use
    np.testing.assert_allclose(clone.detect_features(images[:2]), m.detect_features(images[:2]), rtol=1e-6, atol=1e-7)


def test_unknown_detector_is_a_spec_error(tmp_path):
    from harness.errors import SpecError
    from harness.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("pipeline: watermark\ndataset: {name: image_folder, root: .}\nrole: images\n"
                    "watermarker: {name: ssl, model: test_efficientnet, detector: onnx}\n"
                    "metrics: [{name: watermark.auroc}]\n")
    with pytest.raises(SpecError, match=r"s.yaml:4.*detector.*'onnxruntime'"):
        load_spec(spec)
