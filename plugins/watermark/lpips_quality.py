"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", 2018)
of marked images against their originals, from a backbone file the user gives; nothing downloads.

The metric is the `lpips` package's own network (version 0.1: the scaling layer, unit-normalised
features of five trunk layers, squared differences weighted by its linear layers, spatial means,
summed). Its linear layers ship inside the package; the trunk (torchvision's AlexNet or VGG-16
ImageNet weights) does not, and torchvision would download it: here it comes from ``backbone``, a
local file of the torchvision model's state dict (safetensors, or a torch file read with
``weights_only=True``). Images are compared at their own size, in [-1, 1], one pair at a time.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from harness.errors import UserError

from .quality import ImagePairs, _pair, _summary

Trunk = Literal["alex", "vgg"]

#: torchvision constructor per trunk (the architecture the state dict must fit).
_TORCHVISION = {"alex": "alexnet", "vgg": "vgg16"}
#: Smallest side each trunk takes (AlexNet's strided first layer and pools leave nothing below 32 px).
_MIN_SIDE = {"alex": 32, "vgg": 16}


def build(net: Trunk, backbone: str) -> Any:
    """The lpips.LPIPS module with its packaged linear layers and the trunk weights of ``backbone``."""
    import warnings

    try:
        import lpips
    except ImportError:
        raise UserError("watermark.lpips needs the lpips package: pip install lpips") from None
    import torchvision

    from harness_plugins.timm.checkpoint import load_state_dict

    state = load_state_dict(backbone)
    reference = getattr(torchvision.models, _TORCHVISION[net])(weights=None)
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{backbone}: not a torchvision {_TORCHVISION[net]} state dict ({first})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated", raised inside lpips
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    _load_trunk(model.net, reference.features)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_trunk(trunk: Any, features: Any) -> None:
    """Copy torchvision's ``features[i]`` weights into the lpips trunk, whose slices keep the indices
    (``slice2.3.weight`` is ``features.3.weight``)."""
    by_index = dict(features.named_children())
    for _slice, piece in trunk.named_children():
        for index, module in piece.named_children():
            module.load_state_dict(by_index[index].state_dict(), strict=True)


def _tensor(rgb8: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(rgb8.astype(np.float32).transpose(2, 0, 1).copy()).unsqueeze(0) / 127.5 - 1.0


class LPIPS:
    """Mean LPIPS (v0.1; ``net`` alex or vgg trunk from the local ``backbone`` file) of the marked images
    against their originals, per cell. Lower is more similar; identical images give 0."""

    input_type = "image_pairs"
    version = "1"

    def __init__(self, backbone: str, net: Trunk = "alex") -> None:
        from harness_plugins.timm.checkpoint import existing_file, file_sha256

        self.backbone = existing_file(backbone, "LPIPS backbone")
        self.net = net
        self.protocol = f"watermark-quality/lpips-v0.1-{net}"
        self._model: Any = None
        self._sha = file_sha256(self.backbone)

    def fingerprint(self) -> str:
        return f"lpips-{self.net}|backbone-sha256={self._sha}"

    def distance(self, original: Any, marked: Any) -> float:
        import torch

        if self._model is None:
            self._model = build(self.net, self.backbone)
        a, b = _pair(original, marked)
        side = _MIN_SIDE[self.net]
        if min(a.shape[:2]) < side:
            raise UserError(f"LPIPS ({self.net}) needs images of at least {side}x{side} pixels (got {a.shape[1]}x{a.shape[0]})")
        with torch.inference_mode():
            return float(self._model(_tensor(a), _tensor(b)).item())

    def __call__(self, ground_truth: Any, pairs: ImagePairs) -> dict[str, dict[str, Any]]:
        values = np.array([self.distance(*_pair(o, m, i)) for i, o, m in zip(pairs.image_id, pairs.original, pairs.marked)])
        out = {}
        for cell in pairs.cells():
            v = values[pairs.cell == cell]
            s = _summary(v, "lpips")
            s["lpips_max"] = float(v.max()) if len(v) else None  # the worst pair (lpips_min is the best)
            out[cell] = s
        return out

