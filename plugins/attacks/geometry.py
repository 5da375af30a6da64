"""Geometric attacks: identity, rotation, crops, resizes, flip.

The definitions are those of the papers' code on PIL images: torchvision's functional ``rotate``,
``center_crop`` and ``resize`` (which call PIL) for SSL watermarking and active indexing, the
MarkDiffusion / WAM crop by side ratio, the WAVES random resized crop.
"""

from __future__ import annotations

import math
from typing import Literal

from .base import AreaFraction, Attack, Degrees, rgb, scaled_side


class NoAttack(Attack):
    """The identity (the none row of robustness tables): a copy of the image, no parameter."""

    op = "none"

    def __init__(self) -> None:
        super().__init__()

    def apply(self, image, rng):
        return image.copy()


class Rotate(Attack):
    """Rotation by exactly degrees, counter-clockwise; nearest or bilinear, optionally expanded.

    Rotation by ``degrees`` counter-clockwise about the image centre, borders filled with black.

    ``degrees`` is the absolute angle (25 means exactly 25 degrees; negative turns clockwise).
    ``interpolation`` nearest with ``expand`` false keeps the image size and is the SSL-watermarking
    and WAVES setting (torchvision ``rotate`` defaults); bilinear with ``expand`` true enlarges the
    canvas to hold the whole rotated image, as active indexing does. Same pixels as torchvision's
    ``functional.rotate`` on a PIL image, which is PIL's ``Image.rotate``.
    """

    op = "rotate"

    def __init__(self, degrees: Degrees, interpolation: Literal["nearest", "bilinear"] = "nearest",
                 expand: bool = False) -> None:
        super().__init__(degrees=float(degrees), interpolation=interpolation, expand=bool(expand))
        self.degrees, self.interpolation, self.expand = float(degrees), interpolation, bool(expand)

    def apply(self, image, rng):
        from PIL import Image

        resample = Image.Resampling.NEAREST if self.interpolation == "nearest" else Image.Resampling.BILINEAR
        return image.rotate(self.degrees, resample=resample, expand=self.expand)


def area_sides(width: int, height: int, area: float) -> tuple[int, int]:
    """Sides scaled by sqrt(area), truncated as the SSL / active-indexing code does (at least 1)."""
    s = math.sqrt(area)
    return scaled_side(width, s), scaled_side(height, s)


class CenterCrop(Attack):
    """Centre crop by area: each side times sqrt(area) (SSL watermarking, active indexing).

    Centre crop keeping a fraction ``area`` of the pixels: each side times sqrt(area), truncated.

    ``area`` 0.5 keeps a centred window of int(W x 0.707) x int(H x 0.707) pixels (crop **by area**, as
    SSL watermarking and active indexing; for a crop by side ratio see ``attack.crop_side``). The window
    offset is round((W - w) / 2) with Python's rounding, as torchvision's ``center_crop``.
    """

    op = "center_crop"

    def __init__(self, area: AreaFraction) -> None:
        super().__init__(area=float(area))
        self.area = float(area)

    def apply(self, image, rng):
        w, h = area_sides(image.width, image.height, self.area)
        left = int(round((image.width - w) / 2.0))
        top = int(round((image.height - h) / 2.0))
        return image.crop((left, top, left + w, top + h))


class Resize(Attack):
    """Resize by area: each side times sqrt(area), bilinear (SSL watermarking, active indexing).

    Resize to a fraction ``area`` of the pixels: each side times sqrt(area), truncated; bilinear.

    ``area`` 0.5 gives int(W x 0.707) x int(H x 0.707) (resize **by area**, as SSL watermarking and
    active indexing). PIL's antialiased bilinear filter, which is what torchvision's ``resize`` of a
    PIL image applies.
    """

    op = "resize"

    def __init__(self, area: AreaFraction) -> None:
        super().__init__(area=float(area))
        self.area = float(area)

    def apply(self, image, rng):
        from PIL import Image

        return image.resize(area_sides(image.width, image.height, self.area), Image.Resampling.BILINEAR)


class CropSide(Attack):
    """Centre crop by side ratio: each side times ratio (MarkDiffusion, WAM).

    Centre crop keeping a fraction ``ratio`` of each side: int(W x ratio) x int(H x ratio).

    ``ratio`` 0.5 keeps a quarter of the pixels (crop **by side**, as MarkDiffusion and WAM write it).
    The offset is floor((W - w) / 2), as MarkDiffusion's ``CrSc``; with ``resize_back`` the crop is
    resized back to the original size with PIL's bicubic filter (MarkDiffusion's crop-and-scale). WAM
    places its crop at random; here the window is always centred.
    """

    op = "crop_side"

    def __init__(self, ratio: AreaFraction, resize_back: bool = False) -> None:
        super().__init__(ratio=float(ratio), resize_back=bool(resize_back))
        self.ratio, self.resize_back = float(ratio), bool(resize_back)

    def apply(self, image, rng):
        from PIL import Image

        width, height = image.size
        w, h = scaled_side(width, self.ratio), scaled_side(height, self.ratio)
        left, top = (width - w) // 2, (height - h) // 2
        out = image.crop((left, top, left + w, top + h))
        return out.resize((width, height), Image.Resampling.BICUBIC) if self.resize_back else out


class ResizedCrop(Attack):
    """Square crop of a fraction area of the pixels at a random position, resized back (WAVES).

    The square's side is round(sqrt(area x W x H)) (at most the shorter side), its top-left corner is
    drawn uniformly from the item's rng, and the crop is resized back to W x H with PIL's antialiased
    bilinear filter: WAVES' ``resizedcrop`` (torchvision ``RandomResizedCrop`` with scale and ratio
    fixed, then ``resized_crop``). ``area`` 1 is the identity.
    """

    op = "resized_crop"
    uses_rng = True

    def __init__(self, area: AreaFraction) -> None:
        super().__init__(area=float(area))
        self.area = float(area)

    def apply(self, image, rng):
        from PIL import Image

        width, height = image.size
        side = min(width, height, max(1, int(round(math.sqrt(self.area * width * height)))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        out = image.crop((left, top, left + side, top + side))
        return out.resize((width, height), Image.Resampling.BILINEAR)


class HFlip(Attack):
    """Horizontal mirror (left becomes right); no parameter."""

    op = "hflip"

    def __init__(self) -> None:
        super().__init__()

    def apply(self, image, rng):
        from PIL import Image

        return rgb(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
