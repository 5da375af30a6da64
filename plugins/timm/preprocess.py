"""Image -> tensor preprocessing for the torch descriptors, as small picklable objects.

The core runs ``preprocess`` in DataLoader worker processes, so it must not hold the model: a frozen
dataclass of plain numbers pickles in a few hundred bytes, whatever the descriptor has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

Resize = Literal["square", "short_side", "long_side"]
#: ``resize_first``: PIL resize of the 8-bit image, then normalisation (the usual order);
#: ``normalize_first``: ToTensor and normalisation at full size, then a bilinear tensor resize without
#: antialiasing (active indexing's reference: torchvision 0.12's tensor resize), a differentiable path.
Order = Literal["resize_first", "normalize_first"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """RGB image -> normalised float32 CHW tensor, one per scale.

    ``size`` None keeps the image size (times the scale). ``square`` resizes to size x size (aspect not
    kept, so batches stack); ``short_side`` / ``long_side`` set the short / long side to size and keep
    the aspect ratio (no crop: the whole image is described; revisitop papers use the long side at
    1024); batches of mixed shapes are handled by :func:`collate`.
    One scale returns a tensor, several scales a tuple of tensors in the order of ``scales``.
    """

    size: int | None = 224
    resize: Resize = "square"
    scales: tuple[float, ...] = (1.0,)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    order: Order = "resize_first"

    def __call__(self, image: "Image.Image") -> "torch.Tensor | tuple[torch.Tensor, ...]":
        if image.mode != "RGB":
            image = image.convert("RGB")
        out = tuple(self.at_scale(image, s) for s in self.scales)
        return out[0] if len(out) == 1 else out

    def target_size(self, width: int, height: int, scale: float) -> tuple[int, int]:
        """(width, height) the image is resized to at ``scale``."""
        if self.size is None:
            return max(1, round(width * scale)), max(1, round(height * scale))
        side = max(1, round(self.size * scale))
        if self.resize == "square":
            return side, side
        if (width <= height) == (self.resize == "short_side"):  # the side set to ``side`` is the width
            return side, max(1, round(height * side / width))
        return max(1, round(width * side / height)), side

    def at_scale(self, image: "Image.Image", scale: float) -> "torch.Tensor":
        import torch
        from PIL import Image

        target = self.target_size(*image.size, scale)
        if self.order == "normalize_first":
            return self.resize_tensor(self.normalized(image), target)
        if target != image.size:
            resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
            image = image.resize(target, resample[self.interpolation])
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        chw = ((np.asarray(image, dtype=np.float32) - mean) * inv_std).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw))


    def normalized(self, image: "Image.Image") -> "torch.Tensor":
        """ToTensor and normalisation at the image's own size: float32 (3, H, W)."""
        import torch

        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        chw = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        return torch.from_numpy(np.ascontiguousarray((chw - mean) / std))

    def resize_tensor(self, x: "torch.Tensor", target: tuple[int, int]) -> "torch.Tensor":
        """A normalised (3, H, W) tensor resized to ``target`` (width, height) the way the
        ``normalize_first`` order does it (bilinear, half-pixel centres, no antialiasing); differentiable.
        With ``resize_first`` this is the closest tensor form of the PIL resize (antialiased bilinear)."""
        import torch

        width, height = target
        if (x.shape[-1], x.shape[-2]) == (width, height):
            return x
        mode = self.interpolation if self.order == "resize_first" else "bilinear"
        return torch.nn.functional.interpolate(x.unsqueeze(0), size=(height, width), mode=mode, align_corners=False
                                               if mode != "nearest" else None,
                                               antialias=self.order == "resize_first" and mode != "nearest").squeeze(0)


def collate(samples: Sequence[Any]) -> Any:
    """Batch the outputs of :class:`Preprocess`: like torch's default collate (a tensor, or a list with
    one entry per scale), except that tensors of different shapes (``short_side`` resizing) stay a list
    of per-image tensors instead of failing."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return [_stack([s[i] for s in samples]) for i in range(len(first))]
    return _stack(list(samples))


def _stack(tensors: list["torch.Tensor"]) -> "torch.Tensor | list[torch.Tensor]":
    import torch

    shape = tensors[0].shape
    if all(t.shape == shape for t in tensors):
        return torch.stack(tensors)
    return tensors
