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
        if target != image.size:
            resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
            image = image.resize(target, resample[self.interpolation])
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        chw = ((np.asarray(image, dtype=np.float32) - mean) * inv_std).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw))


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
