"""Just-noticeable-difference heatmaps and the perturbation bound of active indexing (protocols.md §5).

The heatmap is the JND model the paper uses (Wu et al., "Enhanced just noticeable difference model
for images with pattern complexity", IEEE TIP 2017, as in facebookresearch/active_indexing), on the
luminance Y = 0.299 R + 0.587 G + 0.114 B of the 8-bit image (values 0..255):

- luminance masking: ``l = conv5x5(Y, [[1,1,1,1,1],[1,2,2,2,1],[1,2,0,2,1],[1,2,2,2,1],[1,1,1,1,1]]) / 32``
  (zero padding), ``LA = 17 (1 - sqrt(l / 127 + 1e-3)) + 3`` where ``l <= 127``, else ``3/128 (l - 127) + 3``;
- contrast masking: Sobel gradients ``gx`` (kernel [[-1,0,1],[-2,0,2],[-1,0,1]]) and ``gy``
  ([[1,2,1],[0,0,0],[-1,-2,-1]]), cross-correlation with zero padding, ``c = sqrt(gx^2 + gy^2)``,
  ``CM = 0.117 * 16 c^2.4 / (c^2 + 26^2)``;
- ``JND = max(LA + CM - 0.3 min(LA, CM), 5) / 255`` (a floor of 5 grey levels), in [0, 1] units.

The perturbation of an image is ``scaling x JND x alpha_c x tanh(delta)``, added (as in the reference)
to the ImageNet-normalised image, with ``alpha = 0.072 / (0.299, 0.587, 0.114)`` per channel; in pixel
units it is therefore also multiplied by the normalisation's std of the channel (:func:`pixel_bound`).
torch is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

LUMA = (0.299, 0.587, 0.114)
ALPHA = tuple(0.072 / w for w in LUMA)  # per-channel scale of tanh(delta): blue moves most, green least
FLOOR = 5.0  # grey levels: the smallest allowed change anywhere
CLC = 0.3  # overlap of the two masking effects
_LUM_KERNEL = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]
_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
_SOBEL_Y = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]


def heatmap(x: "torch.Tensor") -> "torch.Tensor":
    """JND heatmap of RGB images in [0, 1]: (3, H, W) -> (1, H, W) or (B, 3, H, W) -> (B, 1, H, W)."""
    import torch
    import torch.nn.functional as F

    single = x.ndim == 3
    x = x.unsqueeze(0) if single else x
    y = 255.0 * (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3])
    kernel = lambda k: torch.tensor(k, dtype=y.dtype, device=y.device)[None, None]  # noqa: E731
    la = F.conv2d(y, kernel(_LUM_KERNEL), padding=2) / 32.0
    la = torch.where(la <= 127, 17.0 * (1.0 - torch.sqrt(la.clamp_min(0) / 127.0 + 1e-3)) + 3.0, 3.0 / 128.0 * (la - 127.0) + 3.0)
    gx = F.conv2d(y, kernel(_SOBEL_X), padding=1)
    gy = F.conv2d(y, kernel(_SOBEL_Y), padding=1)
    c = torch.sqrt(gx**2 + gy**2)
    cm = 0.117 * 16.0 * c**2.4 / (c**2 + 26.0**2)
    out = torch.clamp_min(la + cm - CLC * torch.minimum(la, cm), FLOOR) / 255.0
    return out[0] if single else out


def alpha(device: "torch.device | None" = None, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """(3, 1, 1) channel scales of the perturbation."""
    import torch

    return torch.tensor(ALPHA, device=device, dtype=dtype or torch.float32)[:, None, None]


def perturbation(delta: "torch.Tensor", jnd: "torch.Tensor", scaling: float) -> "torch.Tensor":
    """The perturbation (normalised units) for the free variable ``delta`` (3, H, W) and a heatmap (1, H, W)."""
    import torch

    return scaling * jnd * alpha(delta.device, delta.dtype) * torch.tanh(delta)


def pixel_bound(jnd: np.ndarray, scaling: float, std: Sequence[float]) -> np.ndarray:
    """Largest change a pixel may get, in [0, 1] units, before rounding: (3, H, W) from a (1, H, W) heatmap."""
    return scaling * np.asarray(jnd, dtype=np.float64) * (np.asarray(ALPHA) * np.asarray(std, dtype=np.float64))[:, None, None]
