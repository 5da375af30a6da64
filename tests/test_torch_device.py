"""Device, batch size per device and precision of the torch parts (plugins/torch_device.py), tested on
the CPU: CUDA's presence is monkeypatched, so these check the selection logic, not a GPU."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.extract import batch_size_of, extract
from harness.params import check_params
from harness.parts import Item
from harness_plugins.timm.descriptors import TimmDescriptor
from harness_plugins.torch_device import DEFAULT_BATCH, BatchSizes, check_device, exact_float32, resolve_device

CNN = "test_resnet"


@pytest.fixture
def cuda(monkeypatch):
    """torch reports one CUDA device (nothing runs on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_is_cuda_when_torch_sees_it(cuda):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_the_cpu_otherwise(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_one_clear_error(no_cuda, name):
    with pytest.raises(UserError, match=rf"device '{name}' requested but CUDA is not available"):
        resolve_device(name)


def test_a_cuda_index_torch_does_not_see_is_an_error(cuda):
    with pytest.raises(UserError, match="'cuda:3' requested but torch sees 1 CUDA device"):
        resolve_device("cuda:3")


def test_mps_without_mps_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", "", 0])
def test_device_names_are_checked(bad):
    with pytest.raises(UserError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        check_device(bad)


# -- batch size per device ---------------------------------------------------------------------------
def test_batch_sizes_forms():
    default = BatchSizes.parse(None)
    assert not default.explicit and default.for_device("cpu") == 32 and default.for_device("cuda") == 128
    one = BatchSizes.parse(16)
    assert one.explicit and {one.for_device(t) for t in ("cpu", "cuda", "mps")} == {16}
    per = BatchSizes.parse({"cuda": 256})
    assert per.explicit and per.for_device(torch.device("cuda", 0)) == 256 and per.for_device("cpu") == DEFAULT_BATCH["cpu"]
    assert per.host_check == 256 and default.host_check == 32


@pytest.mark.parametrize(("value", "message"), [
    (0, "batch_size must be a positive integer (got 0)"),
    (True, "batch_size must be a positive integer"),
    ({"gpu": 64}, "unknown device type 'gpu' (did you mean 'cuda'?); expected cpu, cuda, mps"),
    ({"cdua": 64}, "did you mean 'cuda'"),
    ({"cuda": -1}, "batch_size.cuda must be a positive integer (got -1)"),
])
def test_batch_size_errors_are_one_clear_line(value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        BatchSizes.parse(value)
    with pytest.raises(UserError, match="batch_size"):
        TimmDescriptor(CNN, batch_size=value)


def test_the_spec_loader_accepts_both_forms_and_refuses_others():
    """Validation (before anything runs) reports the branch of the value's own kind, located in it."""
    for value in (8, {"cpu": 8, "cuda": 64}, None):
        assert not check_params(TimmDescriptor, {"model": CNN, "batch_size": value})[1]
    for value, message in (("big", "Input should be a valid integer (got 'big')"),
                           (0, "Input should be greater than or equal to 1 (got 0)"),
                           ({"gpu": 64}, "Input should be 'cpu', 'cuda' or 'mps' at gpu.[key] (got {'gpu': 64})"),
                           ({"cuda": 0}, "Input should be greater than or equal to 1 at cuda (got {'cuda': 0})")):
        problems = check_params(TimmDescriptor, {"model": CNN, "batch_size": value})[1]
        assert [p.message for p in problems] == [message]


def test_extraction_batch_size_default_follows_the_device(cuda):
    desc = TimmDescriptor(CNN, size=32)
    assert desc.extraction_batch_size(None) == 128 and desc.batch_size == 128
    assert desc.extraction_batch_size(64) == 64  # the spec's extraction.batch_size when the descriptor sets none
    own = TimmDescriptor(CNN, size=32, batch_size={"cpu": 16, "cuda": 256})
    assert own.extraction_batch_size(None) == own.extraction_batch_size(64) == 256  # written on the descriptor: it wins


def test_cpu_batch_sizes_are_unchanged(no_cuda):
    """What CPU runs used before: 32, or the spec's extraction.batch_size."""
    desc = TimmDescriptor(CNN, size=32)
    assert batch_size_of(desc, None) == 32 and batch_size_of(desc, 64) == 64
    assert batch_size_of(TimmDescriptor(CNN, size=32, batch_size={"cuda": 256}), 64) == 32
    assert batch_size_of(object(), None) == 32 and batch_size_of(object(), 7) == 7  # descriptors without a choice


def test_extract_uses_the_descriptor_s_choice(tmp_path):
    from PIL import Image

    class Counting:
        """A describe-only descriptor that asks for batches of 3 whatever the run says."""

        def __init__(self):
            self.sizes = []

        def extraction_batch_size(self, configured):
            return 3

        def describe(self, images):
            self.sizes.append(len(images))
            return np.zeros((len(images), 2), np.float32)

    items = []
    for i in range(7):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
        items.append(Item(id=str(i), path=str(tmp_path / f"{i}.png")))
    desc = Counting()
    extract(desc, items, batch_size=5, workers=1)
    assert desc.sizes == [3, 3, 1]


def test_openclip_and_ssl_share_the_rules(cuda, tmp_path):
    from harness_plugins.openclip.descriptor import OpenClipDescriptor
    from harness_plugins.watermark.ssl import SSLWatermarker

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                  "head_width": 16, "patch_size": 16},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    clip = OpenClipDescriptor(model="tiny", config=str(config), batch_size={"cuda": 64})
    assert clip.device == torch.device("cuda") and clip.extraction_batch_size(16) == 64
    with pytest.raises(UserError, match="unknown device type 'gpu'"):
        OpenClipDescriptor(model="tiny", config=str(config), batch_size={"gpu": 64})
    ssl = SSLWatermarker(model=CNN, batch_size={"cpu": 4, "cuda": 32})
    assert ssl.batch_size == 32 and SSLWatermarker(model=CNN).batch_size == 8
    assert SSLWatermarker(model=CNN, device="cpu", batch_size={"cpu": 4, "cuda": 32}).batch_size == 4


# -- precision and cache identity --------------------------------------------------------------------
def test_half_enters_the_fingerprint_only_where_it_takes_effect(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu_plain, cpu_half = TimmDescriptor(CNN).fingerprint(), TimmDescriptor(CNN, half=True).fingerprint()
    assert cpu_half == cpu_plain and not cpu_plain.endswith("float16")  # float32 on the CPU: same results, same keys
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert TimmDescriptor(CNN).fingerprint() == cpu_plain  # float32 on CUDA: the device stays out of the key
    assert TimmDescriptor(CNN, half=True).fingerprint() == cpu_plain + ":float16"


def test_half_fingerprint_of_checkpoint_and_torchscript_files(cuda, tmp_path):
    import hashlib

    from safetensors.torch import save_file

    from harness_plugins.timm.descriptors import TorchScriptDescriptor

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    ts = tmp_path / "net.pt"
    with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; it is the format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(ts))
    sha = hashlib.sha256(ts.read_bytes()).hexdigest()
    assert TorchScriptDescriptor(str(ts)).fingerprint() == sha
    assert TorchScriptDescriptor(str(ts), half=True).fingerprint() == sha + ":float16"
    ck = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in TimmDescriptor(CNN, device="cpu").model.state_dict().items()}, str(ck))
    assert TimmDescriptor(CNN, checkpoint=str(ck), half=True).fingerprint().endswith(":float16")


def test_exact_float32_turns_tf32_off_on_cuda_only():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = True, True
    try:
        with exact_float32(torch.device("cpu")):
            assert cudnn.allow_tf32 and matmul.allow_tf32
        with exact_float32(torch.device("cuda", 0)):
            assert not cudnn.allow_tf32 and not matmul.allow_tf32
        assert cudnn.allow_tf32 and matmul.allow_tf32  # restored
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def test_gem_pooling_runs_in_float32_under_half():
    """float16 features: x^3 overflows above 40 and eps^3 underflows; the pooling casts to float32."""
    from harness_plugins.timm.descriptors import _gem

    feats = torch.full((1, 4, 6), 50.0, dtype=torch.float16)
    assert torch.isinf(feats.clamp(min=1e-6).pow(3.0).mean(dim=2)).all()  # what float16 pooling would give
    out = _gem(feats, 3.0, dim=2)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.full((1, 4), 50.0))
