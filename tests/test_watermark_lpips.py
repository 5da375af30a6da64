"""LPIPS from a local trunk file: equal to a plain re-derivation of the v0.1 formula, 0 on identical
images, and clear errors for wrong files. Trunks are RANDOM-INITIALISED torchvision networks saved
here (labelled as such): no ImageNet weights are downloaded or shipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import UserError
from harness.testing import sample_images
from harness_plugins.watermark.lpips_quality import LPIPS
from harness_plugins.watermark.quality import ImagePairs


@pytest.fixture(scope="module")
def trunks(tmp_path_factory) -> dict[str, str]:
    import torch
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("lpips")
    out = {}
    # VGG-16 (528 MB) runs the same code with another constructor and layer list; AlexNet keeps this fast
    torch.manual_seed(1)
    model = torchvision.models.alexnet(weights=None)  # random init
    path = folder / "alexnet-random-init.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    out["alex"] = str(path)
    resnet = torchvision.models.resnet18(weights=None)
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(folder / "resnet18.safetensors"))
    out["resnet18"] = str(folder / "resnet18.safetensors")
    # a plain state dict in a torch file works too
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / "alexnet.pth")
    out["alex.pth"] = str(folder / "alexnet.pth")
    return out


LAYERS = {"alex": [1, 4, 7, 9, 11], "vgg": [3, 8, 15, 22, 29]}  # the ReLU outputs LPIPS compares


def slow_lpips(net: str, trunk: str, a: np.ndarray, b: np.ndarray) -> float:
    """The v0.1 formula written out: scale, trunk ReLU outputs, unit-normalise over channels,
    squared difference, the packaged linear weights, spatial mean, sum over layers."""
    import importlib.resources

    import torch
    import torchvision
    from safetensors.torch import load_file

    model = getattr(torchvision.models, {"alex": "alexnet", "vgg": "vgg16"}[net])(weights=None)
    model.load_state_dict(load_file(trunk))
    weights_file = importlib.resources.files("lpips") / "weights" / "v0.1" / f"{net}.pth"
    lins = torch.load(str(weights_file), map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img: np.ndarray) -> list:
        x = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None].float() / 127.5 - 1
        x = (x - shift) / scale
        out = []
        for i, layer in enumerate(model.features):
            x = layer(x)
            if i in LAYERS[net]:
                out.append(x.double())
            if i == LAYERS[net][-1]:
                return out
        return out

    total = 0.0
    with torch.no_grad():
        for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            w = lins[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
            total += float(((na - nb) ** 2 * w).sum(1).mean())
    return total


@pytest.mark.parametrize("net", ["alex"])
def test_equals_the_formula_and_zero_on_identical_images(trunks, net):
    metric = LPIPS(trunks[net], net)
    ims = sample_images(3, 48)
    a, b = (np.asarray(im) for im in ims[:2])
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    for x, y in ((a, b), (a, noisy)):
        assert metric.distance(x, y) == pytest.approx(slow_lpips(net, trunks[net], x, y), rel=1e-4, abs=1e-7)
    assert metric.distance(a, a) == 0.0
    assert metric.distance(a, noisy) < metric.distance(a, b)


def test_per_cell_means_and_a_torch_file_trunk(trunks):
    ims = sample_images(4, 40)
    marked = [np.clip(np.asarray(im).astype(int) + 3, 0, 255).astype(np.uint8) for im in ims]
    pairs = ImagePairs(np.array(["a", "b", "c", "d"]), np.array(["x", "x", "y", "y"]), [np.asarray(i) for i in ims], marked)
    metric = LPIPS(trunks["alex.pth"])
    out = metric(None, pairs)
    d = [metric.distance(o, m) for o, m in zip(pairs.original, pairs.marked)]
    assert out["x"]["lpips"] == pytest.approx(np.mean(d[:2])) and out["y"]["lpips_max"] == pytest.approx(max(d[2:]))
    assert out["x"]["n"] == 2
    assert "backbone-sha256=" in metric.fingerprint()


def test_wrong_files_are_one_clear_error(trunks, tmp_path):
    import torch

    with pytest.raises(UserError, match="LPIPS backbone file not found"):
        LPIPS(str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="not a torchvision alexnet state dict"):
        LPIPS(trunks["resnet18"], "alex").distance(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8))
    pickled = tmp_path / "object.pth"
    torch.save({"weights": Path("/etc/passwd")}, pickled)  # a pickled Python object: never unpickled
    with pytest.raises(UserError, match="refused"):
        LPIPS(str(pickled)).distance(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(UserError, match="at least 32x32"):
        LPIPS(trunks["alex"]).distance(np.zeros((20, 40, 3), np.uint8), np.zeros((20, 40, 3), np.uint8))
