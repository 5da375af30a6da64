"""timm and TorchScript descriptors on small random-initialised models: pooling, scales, checkpoints."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

import timm
from harness.errors import UserError
from harness.params import check_params
from harness.parts import BatchedDescriptor, Descriptor, Item
from harness_plugins.timm.descriptors import TimmDescriptor, TorchScriptDescriptor
from harness_plugins.timm.preprocess import Preprocess, collate

SIZE = 64
CNN, CNN_DIM = "test_resnet", 96  # timm's tiny test models keep the file fast
VIT = "test_vit"  # patch 16, class token, 64-D


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    out = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("astronaut", "chelsea", "coffee")]
    return [im.resize((96, 80)) for im in out]


def _batch(desc, images) -> torch.Tensor:
    return torch.stack([desc.preprocess(im) for im in images])


def test_contract_and_registry_parameters(images):
    desc = TimmDescriptor(CNN, size=SIZE)
    assert isinstance(desc, Descriptor) and isinstance(desc, BatchedDescriptor)
    assert TimmDescriptor.version == TorchScriptDescriptor.version == "1"
    assert desc._model is None  # nothing built before first use
    clean, problems = check_params(TimmDescriptor, {"model": "resnet18", "pooling": "gem", "scales": [1.0, 0.5]})
    assert not problems and list(clean["scales"]) == [1.0, 0.5]
    _, problems = check_params(TimmDescriptor, {"model": "resnet18", "pooling": "gm"})
    assert problems and problems[0].suggestion == "gem"


@pytest.mark.parametrize("pooling", ["model", "gem", "mean"])
def test_cnn_pooling_shapes_and_determinism(pooling, images):
    a = TimmDescriptor(CNN, pooling=pooling, size=SIZE).describe(images)
    b = TimmDescriptor(CNN, pooling=pooling, size=SIZE).describe(images)  # same seed -> same init
    assert a.shape == (3, CNN_DIM) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    c = TimmDescriptor(CNN, pooling=pooling, size=SIZE, seed=1).describe(images)
    assert not np.allclose(a, c)


def test_gem_and_mean_match_a_direct_computation(images):
    gem = TimmDescriptor(CNN, pooling="gem", gem_p=3.0, size=SIZE)
    x = _batch(gem, images)
    with torch.no_grad():
        fmap = gem.model.forward_features(x)
    expected = fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    np.testing.assert_allclose(gem.forward(x), expected.numpy(), rtol=1e-4, atol=1e-6)
    # the ResNet's own head-less output is global average pooling: equal to 'mean' and to GeM with p = 1
    own = TimmDescriptor(CNN, pooling="model", size=SIZE).forward(x)
    mean = TimmDescriptor(CNN, pooling="mean", size=SIZE).forward(x)
    gem1 = TimmDescriptor(CNN, pooling="gem", gem_p=1.0, size=SIZE).forward(x)
    np.testing.assert_allclose(own, fmap.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mean, own, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gem1, own, atol=2e-6)


def test_vit_cls_mean_and_gem_pool_the_right_tokens(images):
    cls = TimmDescriptor(VIT, pooling="cls", size=32)
    x = _batch(cls, images)
    with torch.no_grad():
        tokens = cls.model.forward_features(x)  # (B, 1 + 4, 64): class token then 2 x 2 patches
    assert tokens.shape == (3, 5, 64)
    np.testing.assert_allclose(cls.forward(x), tokens[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    own = TimmDescriptor(VIT, pooling="model", size=32).forward(x)
    np.testing.assert_allclose(own, tokens[:, 0].numpy(), rtol=1e-5, atol=1e-6)  # this ViT pools the class token
    mean = TimmDescriptor(VIT, pooling="mean", size=32).forward(x)
    np.testing.assert_allclose(mean, tokens[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    gem = TimmDescriptor(VIT, pooling="gem", size=32).forward(x)
    ref = tokens[:, 1:].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    np.testing.assert_allclose(gem, ref.numpy(), rtol=1e-4, atol=1e-6)


def test_cls_pooling_needs_a_class_token(images):
    with pytest.raises(UserError, match="class token"):
        TimmDescriptor(CNN, pooling="cls", size=SIZE).describe(images[:1])


def test_multi_scale_is_the_normalised_mean_of_single_scales(images):
    multi = TimmDescriptor(CNN, pooling="gem", size=SIZE, scales=[1.0, 0.5], normalize=True)
    sample = multi.preprocess(images[0])
    assert isinstance(sample, tuple) and [t.shape[-1] for t in sample] == [SIZE, SIZE // 2]
    got = multi.describe(images)
    full = TimmDescriptor(CNN, pooling="gem", size=SIZE, normalize=True).describe(images)
    half = TimmDescriptor(CNN, pooling="gem", size=SIZE // 2, normalize=True).describe(images)
    avg = full + half
    np.testing.assert_allclose(got, avg / np.linalg.norm(avg, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # the batched path (collated list per scale) gives the same rows as describe
    np.testing.assert_allclose(multi.forward(collate([multi.preprocess(im) for im in images])), got, rtol=1e-5)


def test_preprocess_resizes_and_normalises():
    red = Image.new("RGB", (120, 60), (255, 0, 0))
    p = Preprocess(size=30, resize="short_side", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    t = p(red)
    assert t.shape == (3, 30, 60) and t.dtype == torch.float32
    np.testing.assert_allclose(t.mean(dim=(1, 2)).numpy(), [2.0, -1.0, -0.5], atol=1e-5)
    assert Preprocess(size=30)(red).shape == (3, 30, 30)
    assert Preprocess(size=None, scales=(0.5,))(red).shape == (3, 30, 60)
    assert Preprocess(size=20, resize="short_side")(red.rotate(90, expand=True)).shape == (3, 40, 20)
    assert Preprocess(size=40, resize="long_side")(red).shape == (3, 20, 40)
    assert Preprocess(size=40, resize="long_side", scales=(1.0, 0.5))(red.rotate(90, expand=True))[1].shape == (
        3, 20, 10)


def test_short_side_batches_of_mixed_shapes(images):
    desc = TimmDescriptor(CNN, pooling="gem", size=40, resize="short_side", batch_size=4)
    mixed = [images[0], images[1].rotate(90, expand=True), images[2].crop((0, 0, 90, 30))]
    batch = collate([desc.preprocess(im) for im in mixed])
    assert isinstance(batch, list) and len(batch) == 3  # shapes differ: kept per image
    together = desc.forward(batch)
    alone = np.concatenate([desc.describe([im]) for im in mixed])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)


def test_preprocess_and_descriptor_pickle_without_the_model(images):
    desc = TimmDescriptor(CNN, pooling="gem", size=SIZE)
    desc.describe(images[:1])  # builds the model
    blob = pickle.dumps(desc.preprocess)
    assert len(blob) < 2000
    clone = pickle.loads(blob)
    torch.testing.assert_close(clone(images[0]), desc.preprocess(images[0]))
    assert len(pickle.dumps(desc)) < 5000  # the network stays behind
    assert pickle.loads(pickle.dumps(desc.collate)) is collate


def test_empty_input_gives_zero_rows():
    assert TimmDescriptor(CNN, size=SIZE).describe([]).shape == (0, CNN_DIM)


# -- names and checkpoints -----------------------------------------------------------------------------
def test_unknown_model_name_suggests_close_names():
    with pytest.raises(UserError, match=r"unknown timm model 'resnet_18'.*did you mean 'resnet18'"):
        TimmDescriptor("resnet_18")
    TimmDescriptor("vit_tiny_patch16_224.augreg_in21k")  # pretrained tags are accepted names


def _source_model(num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(123)
    return timm.create_model(CNN, num_classes=num_classes).eval()


def _source_features(model, x) -> np.ndarray:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


@pytest.mark.parametrize("form", ["plain.pt", "wrapped.pth", "plain.safetensors"])
def test_checkpoint_round_trip(form, tmp_path, images):
    from safetensors.torch import save_file

    src = _source_model()
    state = src.state_dict()
    path = tmp_path / form
    if form == "plain.pt":
        torch.save(state, path)
    elif form == "wrapped.pth":  # a DDP training checkpoint: wrapper, prefixes, extra entries
        torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    desc = TimmDescriptor(CNN, checkpoint=str(path), size=SIZE)
    x = _batch(desc, images)
    np.testing.assert_allclose(desc.forward(x), _source_features(src, x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(TimmDescriptor(CNN, size=SIZE).forward(x), _source_features(src, x), atol=1e-3)


def test_checkpoint_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"state_dict": _source_model().state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    desc = TimmDescriptor(CNN, checkpoint=str(path), size=SIZE)
    with pytest.raises(UserError, match=r"refused.*argparse\.Namespace"):
        desc.model


def test_checkpoint_key_picks_a_wrapper_entry(tmp_path, images):
    src = _source_model()
    path = tmp_path / "ema.pt"
    torch.save({"state_dict": _source_model(3).state_dict(), "state_dict_ema": src.state_dict()}, path)
    desc = TimmDescriptor(CNN, checkpoint=str(path), checkpoint_key="state_dict_ema", size=SIZE)
    x = _batch(desc, images)
    np.testing.assert_allclose(desc.forward(x), _source_features(src, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="checkpoint_key 'nope' not found"):
        TimmDescriptor(CNN, checkpoint=str(path), checkpoint_key="nope").model


def test_checkpoint_that_does_not_fit_is_reported(tmp_path):
    state = _source_model().state_dict()
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(UserError, match=r"partial\.pt: does not fit timm model 'test_resnet': \d+ missing keys"):
        TimmDescriptor(CNN, checkpoint=str(partial)).model
    with pytest.warns(UserWarning, match="missing"):
        TimmDescriptor(CNN, checkpoint=str(partial), strict=False).model
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "conv1.0.weight": torch.zeros(16, 3, 5, 5)}, wrong)
    with pytest.raises(UserError, match="size mismatch"):
        TimmDescriptor(CNN, checkpoint=str(wrong)).model
    with pytest.raises(UserError, match="not found"):
        TimmDescriptor(CNN, checkpoint=str(tmp_path / "absent.pt"))


def test_fingerprint_follows_the_checkpoint_bytes(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_source_model().state_dict(), path)
    desc = TimmDescriptor(CNN, checkpoint=str(path))
    assert desc.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.save(_source_model(3).state_dict(), path)
    assert desc.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "seed0" in TimmDescriptor(CNN).fingerprint() != TimmDescriptor(CNN, seed=1).fingerprint()


# -- TorchScript ---------------------------------------------------------------------------------------
class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_round_trip(export, tmp_path, images):
    torch.manual_seed(0)
    net = _TinyNet().eval()
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = torch.jit.script(net) if export == "script" else torch.jit.trace(net, torch.zeros(1, 3, 32, 32))
    exported.save(str(path))
    desc = TorchScriptDescriptor(str(path), size=32)
    x = _batch(desc, images)
    with torch.no_grad():
        expected = F.normalize(net(x), dim=1).numpy()
    got = desc.describe(images)
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    raw = TorchScriptDescriptor(str(path), size=32, normalize=False).forward(x)
    np.testing.assert_allclose(raw, net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert desc.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchscript_rejects_other_files(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(_TinyNet().state_dict(), path)
    with pytest.raises(UserError, match="not a loadable TorchScript file"):
        TorchScriptDescriptor(str(path), size=32).model
    with pytest.raises(UserError, match="not found"):
        TorchScriptDescriptor(str(tmp_path / "absent.pt"))


class _TupleNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))


def test_torchscript_output_must_be_a_batch_of_vectors(tmp_path, images):
    path = tmp_path / "tuple.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_TupleNet()).save(str(path))
    with pytest.raises(UserError, match="expected a \\(batch, d\\) tensor"):
        TorchScriptDescriptor(str(path), size=32).describe(images[:1])


def test_half_on_cpu_warns_and_runs_float32(images):
    desc = TimmDescriptor(CNN, size=SIZE, half=True, device="cpu")
    with pytest.warns(UserWarning, match="float16 is used on CUDA only"):
        x = desc.describe(images[:2])
    np.testing.assert_array_equal(x, TimmDescriptor(CNN, size=SIZE, device="cpu").describe(images[:2]))


def test_bad_device_and_batch_size():
    with pytest.raises(UserError, match="device"):
        TimmDescriptor(CNN, device="gpu")
    with pytest.raises(UserError, match="batch_size"):
        TimmDescriptor(CNN, batch_size=0)


# -- through the core's extraction path ----------------------------------------------------------------
def test_extract_with_worker_processes_matches_describe(tmp_path, images):
    extract = pytest.importorskip("harness.extract").extract
    items = []
    for i, im in enumerate(images):
        path = tmp_path / f"{i}.png"
        im.save(path)
        items.append(Item(id=str(i), path=str(path)))
    desc = TimmDescriptor(CNN, pooling="gem", size=SIZE, scales=[1.0, 0.75])
    got = extract(desc, items, batch_size=2, workers=1)
    np.testing.assert_allclose(got, desc.describe(images), rtol=1e-5, atol=1e-6)
