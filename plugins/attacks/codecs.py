"""Lossy re-encoding attacks: JPEG and WebP through PIL's encoders, decoded back to RGB pixels."""

from __future__ import annotations

import io

from .base import Attack, Quality


def reencode(image, fmt: str, **options):
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        return decoded.convert("RGB")


class Jpeg(Attack):
    """JPEG re-encoding at quality 0..100 (PIL encoder).

    JPEG re-encoding at ``quality`` (0..100, PIL / libjpeg scale; lower = stronger), decoded back.

    PIL's encoder with its defaults otherwise (4:2:0 chroma subsampling, standard tables, baseline):
    the same pixels as AugLy's ``encoding_quality`` (SSL watermarking, active indexing) and as WAVES /
    W-Bench's ``compression`` (``Image.save(format="JPEG", quality=q)``).
    """

    op = "jpeg"

    def __init__(self, quality: Quality) -> None:
        super().__init__(quality=int(quality))
        self.quality = int(quality)

    def apply(self, image, rng):
        return reencode(image, "JPEG", quality=self.quality)


class Webp(Attack):
    """WebP re-encoding at quality 0..100 (PIL / libwebp encoder).

    Lossy WebP re-encoding at ``quality`` (0..100, libwebp scale; lower = stronger), decoded back.

    PIL's WebP encoder (libwebp) with its defaults otherwise (method 4, lossy).
    """

    op = "webp"

    def __init__(self, quality: Quality) -> None:
        super().__init__(quality=int(quality))
        self.quality = int(quality)

    def apply(self, image, rng):
        return reencode(image, "WEBP", quality=self.quality)
