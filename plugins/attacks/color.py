"""Colour attacks: PIL ``ImageEnhance`` factors (what torchvision's ``adjust_*`` apply to PIL images, and
what WAVES and W-Bench call directly), hue shift, greyscale."""

from __future__ import annotations

from .base import Attack, Factor, HueShift


class _Enhance(Attack):
    """``ImageEnhance.<kind>(image).enhance(factor)``: a blend of the image with a degenerate version,
    out = degenerate + factor x (image - degenerate), truncated to 0..255."""

    kind = ""

    def __init__(self, factor: Factor) -> None:
        super().__init__(factor=float(factor))
        self.factor = float(factor)

    def apply(self, image, rng):
        from PIL import ImageEnhance

        return getattr(ImageEnhance, self.kind)(image).enhance(self.factor)


class Brightness(_Enhance):
    """Brightness factor (PIL ImageEnhance): 0 black, 1 identity.

    Brightness ``factor``: every value multiplied by it (truncated); 0 is black, 1 the identity, 2
    doubles (SSL grid 0.5 .. 2; W-Bench 1.2 .. 2.0)."""

    op, kind = "brightness", "Brightness"


class Contrast(_Enhance):
    """Contrast factor (PIL ImageEnhance): 0 flat grey, 1 identity.

    Contrast ``factor``: blend with the mean grey level (of the image's luma, rounded); 0 is a flat grey
    image, 1 the identity, 2 doubles the distance to the mean (SSL grid 0, 0.5, 1, 1.5, 2)."""

    op, kind = "contrast", "Contrast"


class Saturation(_Enhance):
    """Saturation factor (PIL ImageEnhance.Color): 0 greyscale, 1 identity.

    Saturation ``factor``: blend with the image's luma (PIL ``ImageEnhance.Color``); 0 is greyscale,
    1 the identity, 2 doubles the saturation."""

    op, kind = "saturation", "Color"


class Sharpness(_Enhance):
    """Sharpness factor (PIL ImageEnhance): 0 smoothed, 1 identity.

    Sharpness ``factor``: blend with PIL's 3 x 3 SMOOTH-filtered image (borders kept); 0 is the
    smoothed image, 1 the identity, 2 sharpens."""

    op, kind = "sharpness", "Sharpness"


class Hue(Attack):
    """Hue shift in turns of the colour wheel, in [-0.5, 0.5] (torchvision adjust_hue).

    Hue rotation by ``shift`` turns of the colour wheel, in [-0.5, 0.5] (0.5 = 180 degrees).

    torchvision's ``adjust_hue`` on a PIL image: in PIL's 8-bit HSV the hue channel is shifted by
    int(shift x 255) (truncated toward zero) modulo 256, saturation and value kept. ``shift`` 0.2 adds
    51 hue levels; -0.5 and 0.5 differ by one level (-127 vs +127). ``shift`` 0 is not the identity:
    the 8-bit HSV round trip alone moves values by a few levels (as it does in torchvision).
    """

    op = "hue"

    def __init__(self, shift: HueShift) -> None:
        super().__init__(shift=float(shift))
        self.shift = float(shift)

    def apply(self, image, rng):
        import numpy as np
        from PIL import Image

        h, s, v = image.convert("HSV").split()
        delta = int(self.shift * 255) % 256  # Python int() truncates toward zero, as np.int32(...)
        hue = ((np.asarray(h, dtype=np.uint16) + delta) % 256).astype(np.uint8)
        return Image.merge("HSV", (Image.fromarray(hue), s, v)).convert("RGB")


class Grayscale(Attack):
    """Greyscale (PIL luma) in the three channels.

    Greyscale: PIL's luma L = (299 R + 587 G + 114 B) / 1000 (fixed point, rounded), copied to the three
    channels (torchvision ``rgb_to_grayscale`` of a PIL image, as SSL watermarking); no parameter."""

    op = "grayscale"

    def __init__(self) -> None:
        super().__init__()

    def apply(self, image, rng):
        return image.convert("L").convert("RGB")
