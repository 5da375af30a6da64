"""AugLy image operations as seeded query transforms (``transform(image, rng) -> image``).

Each factory's keyword parameters set the *ranges* its random parameters are drawn from; every draw
comes from the ``rng`` the core passes in, so a query is reproducible bit for bit. AugLy's own
randomness is never used: ``random_noise`` and ``shuffle_pixels`` reseed numpy's global state, and
``perspective_transform`` draws from it (and uses ``np.float``, gone in NumPy 2), so those three are
re-implemented here with the rng; ``meme_format`` calls ``FreeTypeFont.getsize_multiline`` (gone in
Pillow 10) and is re-implemented with ``ImageDraw.multiline_textbbox`` and AugLy's bundled font.
Every asset (fonts, emojis, screenshot templates) ships inside the augly wheel: nothing is fetched.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


def _functional():
    import augly.image.functional as F  # heavy: imported only when a transform runs

    return F


def _rgb(image: "Image.Image") -> "Image.Image":
    return image if image.mode == "RGB" else image.convert("RGB")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _range(name: str, lo: float, hi: float, *, low: float | None = None, high: float | None = None) -> None:
    _require(lo <= hi, f"{name}: min ({lo}) must not exceed max ({hi})")
    if low is not None:
        _require(lo >= low, f"{name}: values must be >= {low}, got {lo}")
    if high is not None:
        _require(hi <= high, f"{name}: values must be <= {high}, got {hi}")


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _assets() -> dict[str, Any]:
    """Bundled AugLy assets, listed in a sorted (machine-independent) order."""
    from augly import utils

    fonts = sorted(
        os.path.join(utils.FONTS_DIR, f)
        for f in os.listdir(utils.FONTS_DIR)
        if f.endswith(".ttf") and os.path.exists(os.path.join(utils.FONTS_DIR, f[:-4] + ".pkl"))
    )
    emojis = sorted(
        os.path.join(root, f) for root, _, files in os.walk(utils.EMOJI_DIR) for f in files if f.endswith(".png")
    )
    return {
        "fonts": fonts,
        "emojis": emojis,
        "meme_font": utils.MEME_DEFAULT_FONT,
        "templates": [os.path.join(utils.SCREENSHOT_TEMPLATES_DIR, t) for t in ("web.png", "mobile.png")],
        "bboxes": utils.BBOXES_PATH,
    }


class _Transform:
    """Base: converts to RGB around :meth:`apply`, which draws its parameters from ``rng``."""

    version = "1"

    def __call__(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image":
        return _rgb(self.apply(_rgb(image), rng))

    def apply(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image":
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class _Factor(_Transform):
    """An AugLy op with a single ``factor`` drawn uniformly from [min_factor, max_factor]."""

    op = ""
    low: float = 0.0  # bounds accepted for the factor range
    high: float | None = None

    def __init__(self, min_factor: float = 0.5, max_factor: float = 1.5) -> None:
        _range(f"{self.op} factor", min_factor, max_factor, low=self.low, high=self.high)
        self.min_factor, self.max_factor = min_factor, max_factor

    def apply(self, image, rng):
        return getattr(_functional(), self.op)(image, factor=_u(rng, self.min_factor, self.max_factor))


# --- geometry -------------------------------------------------------------------------------------


class Crop(_Transform):
    """Random crop keeping a fraction of the area in [min_area, max_area] (AugLy crop)."""

    def __init__(self, min_area: float = 0.3, max_area: float = 0.9, max_aspect_change: float = 1.5) -> None:
        _range("crop area", min_area, max_area, low=0.01, high=1.0)
        _require(max_aspect_change >= 1.0, f"crop max_aspect_change must be >= 1, got {max_aspect_change}")
        self.min_area, self.max_area, self.max_aspect_change = min_area, max_area, max_aspect_change

    def apply(self, image, rng):
        area = _u(rng, self.min_area, self.max_area)
        log_r = np.log(self.max_aspect_change)
        aspect = float(np.exp(rng.uniform(-log_r, log_r)))  # relative width / height of the window
        w = min(1.0, float(np.sqrt(area * aspect)))
        h = min(1.0, area / w)
        x1, y1 = _u(rng, 0.0, 1.0 - w), _u(rng, 0.0, 1.0 - h)
        return _functional().crop(image, x1=x1, y1=y1, x2=x1 + w, y2=y1 + h)


class Rotate(_Transform):
    """Rotation by a uniform angle in [-max_degrees, max_degrees], black borders cropped out (AugLy)."""

    def __init__(self, max_degrees: float = 30.0, min_degrees: float = 0.0) -> None:
        _range("rotate degrees", min_degrees, max_degrees, low=0.0, high=180.0)
        self.min_degrees, self.max_degrees = min_degrees, max_degrees

    def apply(self, image, rng):
        degrees = _u(rng, self.min_degrees, self.max_degrees) * float(rng.choice([-1.0, 1.0]))
        return _functional().rotate(image, degrees=degrees)


class HFlip(_Transform):
    """Horizontal mirror (AugLy hflip); deterministic."""

    def apply(self, image, rng):
        return _functional().hflip(image)


class VFlip(_Transform):
    """Vertical flip (AugLy vflip); deterministic."""

    def apply(self, image, rng):
        return _functional().vflip(image)


class Scale(_Factor):
    """Resize by a factor in [min_factor, max_factor] (AugLy scale)."""

    op = "scale"
    low, high = 0.01, 4.0

    def __init__(self, min_factor: float = 0.3, max_factor: float = 1.0) -> None:
        super().__init__(min_factor, max_factor)


class ChangeAspectRatio(_Transform):
    """Stretch to an aspect ratio log-uniform in [min_ratio, max_ratio] (AugLy change_aspect_ratio)."""

    def __init__(self, min_ratio: float = 0.5, max_ratio: float = 2.0) -> None:
        _range("aspect ratio", min_ratio, max_ratio, low=0.05, high=20.0)
        self.min_ratio, self.max_ratio = min_ratio, max_ratio

    def apply(self, image, rng):
        ratio = float(np.exp(rng.uniform(np.log(self.min_ratio), np.log(self.max_ratio))))
        return _functional().change_aspect_ratio(image, ratio=ratio)


class Skew(_Transform):
    """Skew along a random axis by a factor in [-max_factor, max_factor] (AugLy skew)."""

    def __init__(self, max_factor: float = 0.5) -> None:
        _range("skew factor", 0.0, max_factor, high=2.0)
        self.max_factor = max_factor

    def apply(self, image, rng):
        factor = _u(rng, -self.max_factor, self.max_factor)
        return _functional().skew(image, skew_factor=factor, axis=int(rng.integers(0, 2)))


class PerspectiveTransform(_Transform):
    """Perspective warp: each corner moves by N(0, sigma * min side), sigma in [min_sigma, max_sigma].

    Same model as AugLy's perspective_transform (corners displaced by a Gaussian, bicubic warp, black
    fill), re-implemented: AugLy's version draws from numpy's global state and uses ``np.float``.
    """

    def __init__(self, min_sigma: float = 0.02, max_sigma: float = 0.08, crop_out_black_border: bool = False) -> None:
        _range("perspective sigma", min_sigma, max_sigma, low=0.0, high=0.5)
        self.min_sigma, self.max_sigma = min_sigma, max_sigma
        self.crop_out_black_border = crop_out_black_border

    def apply(self, image, rng):
        from PIL import Image

        w, h = image.size
        sigma = _u(rng, self.min_sigma, self.max_sigma) * min(w, h)
        src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
        dst = src + rng.normal(0.0, sigma, size=(4, 2))
        coeffs = perspective_coefficients(dst, src)
        out = image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)
        if self.crop_out_black_border:
            (tl, tr, br, bl) = dst
            box = (max(0, tl[0], bl[0]), max(0, tl[1], tr[1]), min(w, tr[0], br[0]), min(h, bl[1], br[1]))
            if box[2] - box[0] >= 8 and box[3] - box[1] >= 8:  # too strong a warp: keep the borders
                out = out.crop(tuple(int(round(v)) for v in box))
        return out


def perspective_coefficients(out_points: np.ndarray, in_points: np.ndarray) -> np.ndarray:
    """The 8 coefficients PIL's PERSPECTIVE transform takes, mapping output to input coordinates.

    PIL samples input ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1)) for output
    pixel (x, y); four point pairs give an exact 8 x 8 linear system.
    """
    out_points = np.asarray(out_points, dtype=np.float64)
    in_points = np.asarray(in_points, dtype=np.float64)
    x, y = out_points[:, 0], out_points[:, 1]
    u, v = in_points[:, 0], in_points[:, 1]
    zeros, ones = np.zeros(4), np.ones(4)
    rows_u = np.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], axis=1)
    rows_v = np.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], axis=1)
    a = np.concatenate([rows_u, rows_v])
    b = np.concatenate([u, v])
    return np.linalg.solve(a, b)


class Pad(_Transform):
    """Pad by fractions of width / height in [0, max_factor] with a random colour (AugLy pad)."""

    def __init__(self, max_factor: float = 0.3, min_factor: float = 0.0) -> None:
        _range("pad factor", min_factor, max_factor, low=0.0, high=2.0)
        self.min_factor, self.max_factor = min_factor, max_factor

    def apply(self, image, rng):
        wf, hf = (_u(rng, self.min_factor, self.max_factor) for _ in range(2))
        return _functional().pad(image, w_factor=wf, h_factor=hf, color=_color(rng))


class PadSquare(_Transform):
    """Pad to a square with a random colour (AugLy pad_square)."""

    def apply(self, image, rng):
        return _functional().pad_square(image, color=_color(rng))


# --- colour and pixels ----------------------------------------------------------------------------


class Brightness(_Factor):
    """Brightness factor in [min_factor, max_factor] (AugLy brightness)."""

    op = "brightness"


class Contrast(_Factor):
    """Contrast factor in [min_factor, max_factor] (AugLy contrast)."""

    op = "contrast"


class Saturation(_Factor):
    """Saturation factor in [min_factor, max_factor] (AugLy saturation; 0 = grey)."""

    op = "saturation"

    def __init__(self, min_factor: float = 0.0, max_factor: float = 2.0) -> None:
        super().__init__(min_factor, max_factor)


class Sharpen(_Factor):
    """Sharpen factor in [min_factor, max_factor] (AugLy sharpen)."""

    op = "sharpen"

    def __init__(self, min_factor: float = 1.5, max_factor: float = 5.0) -> None:
        super().__init__(min_factor, max_factor)


class ColorJitter(_Transform):
    """Brightness, contrast and saturation factors each in [1 - x, 1 + x] (AugLy color_jitter)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.6) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            _range(f"color_jitter {name}", 0.0, value, high=1.0)
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def apply(self, image, rng):
        b, c, s = (_u(rng, 1.0 - x, 1.0 + x) for x in (self.brightness, self.contrast, self.saturation))
        return _functional().color_jitter(image, brightness_factor=b, contrast_factor=c, saturation_factor=s)


class Grayscale(_Transform):
    """Grey conversion, ``luminosity`` or ``average`` at random (AugLy grayscale)."""

    def apply(self, image, rng):
        return _functional().grayscale(image, mode=str(rng.choice(["luminosity", "average"])))


class ConvertColor(_Transform):
    """Palette quantization to a number of colours in [min_colors, max_colors] (AugLy convert_color)."""

    def __init__(self, min_colors: int = 4, max_colors: int = 64) -> None:
        _range("convert_color colors", min_colors, max_colors, low=2, high=256)
        self.min_colors, self.max_colors = min_colors, max_colors

    def apply(self, image, rng):
        colors = int(rng.integers(self.min_colors, self.max_colors + 1))
        return _functional().convert_color(image, mode="P", palette=1, colors=colors)


class Blur(_Transform):
    """Gaussian blur with a radius in [min_radius, max_radius] pixels (AugLy blur)."""

    def __init__(self, min_radius: float = 1.0, max_radius: float = 4.0) -> None:
        _range("blur radius", min_radius, max_radius, low=0.0, high=100.0)
        self.min_radius, self.max_radius = min_radius, max_radius

    def apply(self, image, rng):
        return _functional().blur(image, radius=_u(rng, self.min_radius, self.max_radius))


class Pixelization(_Transform):
    """Pixelization: downscale ratio in [min_ratio, max_ratio] then back up (AugLy pixelization)."""

    def __init__(self, min_ratio: float = 0.1, max_ratio: float = 0.5) -> None:
        _range("pixelization ratio", min_ratio, max_ratio, low=0.01, high=1.0)
        self.min_ratio, self.max_ratio = min_ratio, max_ratio

    def apply(self, image, rng):
        return _functional().pixelization(image, ratio=_u(rng, self.min_ratio, self.max_ratio))


class Jpeg(_Transform):
    """JPEG re-encoding with a quality in [min_quality, max_quality] (AugLy encoding_quality)."""

    def __init__(self, min_quality: int = 10, max_quality: int = 50) -> None:
        _range("jpeg quality", min_quality, max_quality, low=1, high=100)
        self.min_quality, self.max_quality = min_quality, max_quality

    def apply(self, image, rng):
        quality = int(rng.integers(self.min_quality, self.max_quality + 1))
        return _functional().encoding_quality(image, quality=quality)


_PIL_FILTERS = ("EDGE_ENHANCE", "EDGE_ENHANCE_MORE", "SMOOTH", "SMOOTH_MORE", "DETAIL", "CONTOUR", "EMBOSS",
                "FIND_EDGES", "SHARPEN")


class PilFilter(_Transform):
    """One of PIL's fixed filters, chosen among ``filters`` (AugLy apply_pil_filter)."""

    def __init__(self, filters: list[str] | None = None) -> None:
        chosen = list(filters) if filters is not None else list(_PIL_FILTERS)
        unknown = sorted(set(chosen) - set(_PIL_FILTERS))
        _require(bool(chosen), "pil_filter: filters must not be empty")
        _require(not unknown, f"pil_filter: unknown filters {unknown}; choose among {list(_PIL_FILTERS)}")
        self.filters = chosen

    def apply(self, image, rng):
        from PIL import ImageFilter

        name = self.filters[int(rng.integers(0, len(self.filters)))]
        return _functional().apply_pil_filter(image, filter_type=getattr(ImageFilter, name))


class RandomNoise(_Transform):
    """Additive Gaussian noise, std in [min_std, max_std] of the 0..1 range (as AugLy random_noise).

    Re-implemented because AugLy's version reseeds numpy's global random state.
    """

    def __init__(self, min_std: float = 0.02, max_std: float = 0.1) -> None:
        _range("noise std", min_std, max_std, low=0.0, high=1.0)
        self.min_std, self.max_std = min_std, max_std

    def apply(self, image, rng):
        from PIL import Image

        std = _u(rng, self.min_std, self.max_std)
        x = np.asarray(image, dtype=np.float32) / 255.0
        x = x + rng.normal(0.0, std, size=x.shape).astype(np.float32)
        return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8))


class ShufflePixels(_Transform):
    """Shuffles a fraction in [min_factor, max_factor] of the pixels among themselves (as AugLy).

    Re-implemented because AugLy's version reseeds numpy's global random state.
    """

    def __init__(self, min_factor: float = 0.05, max_factor: float = 0.3) -> None:
        _range("shuffle_pixels factor", min_factor, max_factor, low=0.0, high=1.0)
        self.min_factor, self.max_factor = min_factor, max_factor

    def apply(self, image, rng):
        from PIL import Image

        x = np.array(image).reshape(-1, 3)
        n = int(_u(rng, self.min_factor, self.max_factor) * len(x))
        chosen = rng.choice(len(x), size=n, replace=False)
        x[chosen] = x[rng.permutation(chosen)]
        return Image.fromarray(x.reshape(image.height, image.width, 3))


# --- overlays and layouts -------------------------------------------------------------------------


class OverlayText(_Transform):
    """Random characters of a bundled font, 1..max_lines lines, size and opacity in ranges (AugLy)."""

    def __init__(
        self,
        min_font_size: float = 0.05,
        max_font_size: float = 0.2,
        min_opacity: float = 0.5,
        max_opacity: float = 1.0,
        max_lines: int = 2,
        max_chars: int = 12,
    ) -> None:
        _range("overlay_text font size", min_font_size, max_font_size, low=0.01, high=1.0)
        _range("overlay_text opacity", min_opacity, max_opacity, low=0.0, high=1.0)
        _require(max_lines >= 1 and max_chars >= 1, "overlay_text: max_lines and max_chars must be >= 1")
        self.min_font_size, self.max_font_size = min_font_size, max_font_size
        self.min_opacity, self.max_opacity = min_opacity, max_opacity
        self.max_lines, self.max_chars = max_lines, max_chars

    def apply(self, image, rng):
        fonts = _assets()["fonts"]
        n_lines = int(rng.integers(1, self.max_lines + 1))
        # Python ints: AugLy checks isinstance(index, int), which numpy integers fail.
        text = [[int(c) for c in rng.integers(0, 1000, size=int(rng.integers(1, self.max_chars + 1)))]
                for _ in range(n_lines)]
        return _functional().overlay_text(
            image,
            text=text,
            font_file=fonts[int(rng.integers(0, len(fonts)))],
            font_size=_u(rng, self.min_font_size, self.max_font_size),
            opacity=_u(rng, self.min_opacity, self.max_opacity),
            color=_color(rng),
            x_pos=_u(rng, 0.0, 0.6),
            y_pos=_u(rng, 0.0, 0.8),
        )


class OverlayEmoji(_Transform):
    """One of AugLy's bundled Twemoji, size (fraction of height) and opacity in ranges (AugLy)."""

    def __init__(self, min_size: float = 0.1, max_size: float = 0.4, min_opacity: float = 0.6, max_opacity: float = 1.0) -> None:
        _range("overlay_emoji size", min_size, max_size, low=0.01, high=1.0)
        _range("overlay_emoji opacity", min_opacity, max_opacity, low=0.0, high=1.0)
        self.min_size, self.max_size = min_size, max_size
        self.min_opacity, self.max_opacity = min_opacity, max_opacity

    def apply(self, image, rng):
        emojis = _assets()["emojis"]
        size = _u(rng, self.min_size, self.max_size)
        return _functional().overlay_emoji(
            image,
            emoji_path=emojis[int(rng.integers(0, len(emojis)))],
            opacity=_u(rng, self.min_opacity, self.max_opacity),
            emoji_size=size,
            x_pos=_u(rng, 0.0, max(0.0, 1.0 - size * image.height / image.width)),
            y_pos=_u(rng, 0.0, 1.0 - size),
        )


class OverlayStripes(_Transform):
    """Stripes of a random colour, angle, density, type; width and opacity in ranges (AugLy)."""

    def __init__(self, max_width: float = 0.5, min_opacity: float = 0.3, max_opacity: float = 1.0) -> None:
        _range("overlay_stripes width", 0.0, max_width, high=1.0)
        _range("overlay_stripes opacity", min_opacity, max_opacity, low=0.0, high=1.0)
        self.max_width, self.min_opacity, self.max_opacity = max_width, min_opacity, max_opacity

    def apply(self, image, rng):
        return _functional().overlay_stripes(
            image,
            line_width=_u(rng, 0.05, max(0.05, self.max_width)),
            line_color=_color(rng),
            line_angle=_u(rng, -90.0, 90.0),
            line_density=_u(rng, 0.2, 0.8),
            line_type=str(rng.choice(["solid", "dashed", "dotted"])),
            line_opacity=_u(rng, self.min_opacity, self.max_opacity),
        )


class OverlayOntoBackground(_Transform):
    """Pastes the image, at a fraction in [min_size, max_size] of the canvas, onto a plain canvas of a
    random colour (AugLy overlay_onto_background_image)."""

    def __init__(self, min_size: float = 0.4, max_size: float = 0.9) -> None:
        _range("overlay_onto_background size", min_size, max_size, low=0.05, high=1.0)
        self.min_size, self.max_size = min_size, max_size

    def apply(self, image, rng):
        from PIL import Image

        size = _u(rng, self.min_size, self.max_size)
        background = Image.new("RGB", (16, 16), _color(rng))  # scale_bg resizes it to fit the image
        return _functional().overlay_onto_background_image(
            image,
            background_image=background,
            overlay_size=size,
            x_pos=_u(rng, 0.0, 1.0 - size),
            y_pos=_u(rng, 0.0, 1.0 - size),
            scale_bg=True,
        )


class OverlayOntoScreenshot(_Transform):
    """The image inside one of AugLy's bundled screenshot templates (web or mobile), cropped or
    resized to fit (AugLy overlay_onto_screenshot)."""

    def __init__(self, templates: list[str] | None = None) -> None:
        chosen = list(templates) if templates is not None else ["web.png", "mobile.png"]
        _require(bool(chosen) and set(chosen) <= {"web.png", "mobile.png"},
                 f"overlay_onto_screenshot: templates must be among ['web.png', 'mobile.png'], got {chosen}")
        self.templates = chosen

    def apply(self, image, rng):
        assets = _assets()
        template = self.templates[int(rng.integers(0, len(self.templates)))]
        return _functional().overlay_onto_screenshot(
            image,
            template_filepath=os.path.join(os.path.dirname(assets["templates"][0]), template),
            template_bboxes_filepath=assets["bboxes"],
            crop_src_to_fit=bool(rng.integers(0, 2)),
        )


_MEME_WORDS = ("LOL", "WHEN YOU", "ME", "MONDAY", "NOPE", "SUCH WOW", "THAT FEELING", "OK", "MOOD",
               "BE LIKE", "NOBODY:", "FINALLY", "WAIT", "WHY", "SAME", "CLASSIC", "TRUE STORY", "EPIC")


class MemeFormat(_Transform):
    """A meme: caption band above the image (height a fraction in [min_caption, max_caption] of the image
    height) with centred text in AugLy's meme font.

    Same layout as AugLy's meme_format (font shrunk in steps of 5 until the text fits, 5 px margins),
    re-implemented with ``ImageDraw.multiline_textbbox`` because AugLy uses a Pillow API removed in 10.
    """

    def __init__(self, min_caption: float = 0.15, max_caption: float = 0.35, random_colors: bool = True) -> None:
        _range("meme_format caption", min_caption, max_caption, low=0.02, high=1.0)
        self.min_caption, self.max_caption, self.random_colors = min_caption, max_caption, random_colors

    def apply(self, image, rng):
        words = [_MEME_WORDS[int(i)] for i in rng.integers(0, len(_MEME_WORDS), size=int(rng.integers(1, 3)))]
        text = "\n".join(words) if len(words) > 1 and rng.random() < 0.5 else " ".join(words)
        caption = max(16, int(round(_u(rng, self.min_caption, self.max_caption) * image.height)))
        if self.random_colors and rng.random() < 0.5:
            background, color = _color(rng), _color(rng)
        else:
            background, color = (255, 255, 255), (0, 0, 0)  # AugLy's defaults
        return meme(image, text, caption, background, color)


def meme(image: "Image.Image", text: str, caption_height: int, background: tuple[int, int, int],
         color: tuple[int, int, int]) -> "Image.Image":
    """Deterministic meme layout: ``caption_height`` band on top, ``text`` centred in it."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = image.size
    out = Image.new("RGB", (width, height + caption_height), background)
    out.paste(image, (0, caption_height))
    draw = ImageDraw.Draw(out)
    font_size = caption_height - 10
    while True:
        font = ImageFont.truetype(_assets()["meme_font"], max(font_size, 1))
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        if (right - left <= width - 10 and bottom - top <= caption_height - 10) or font_size <= 1:
            break
        font_size -= 5
    x = round((width - (right - left)) / 2) - left
    y = round((caption_height - (bottom - top)) / 2) - top
    draw.multiline_text((x, y), text, font=font, fill=color, align="center")
    return out


# --- chains ---------------------------------------------------------------------------------------


class _Chain(_Transform):
    """Applies 1..n ops drawn without replacement with weights, in a fixed stage order."""

    ops: dict[str, tuple[float, int, _Transform]]  # name -> (weight, stage, transform)

    def __init__(self, name: str, min_ops: int, max_ops: int) -> None:
        _require(1 <= min_ops <= max_ops, f"{name}: need 1 <= min_ops <= max_ops, got {min_ops}, {max_ops}")
        self.min_ops, self.max_ops = min_ops, max_ops

    def apply(self, image, rng):
        return self.apply_recorded(image, rng)[0]

    def apply_recorded(self, image, rng):
        """The copy and the ops it went through, in order (``[{"op": name}]``): per-operation records."""
        names = list(self.ops)
        weights = np.array([self.ops[n][0] for n in names], dtype=np.float64)
        n = int(rng.integers(self.min_ops, min(self.max_ops, len(names)) + 1))
        chosen = rng.choice(len(names), size=n, replace=False, p=weights / weights.sum())
        applied, image = [], _rgb(image)
        # Geometry, then colour, then overlays, then layouts, then re-encoding: how copies are made.
        for i in sorted(chosen.tolist(), key=lambda i: (self.ops[names[i]][1], i)):
            image = self.ops[names[i]][2](image, rng)  # __call__ returns RGB
            applied.append({"op": names[i]})
        return _rgb(image), applied


def _graded_ops(s: float) -> dict[str, tuple[float, int, _Transform]]:
    """The DISC21-like op set at strength s in [0, 1]: (weight, stage, transform)."""
    return {
        "crop": (3.0, 0, Crop(min_area=max(0.1, 1.0 - 0.85 * s), max_area=max(0.15, 1.0 - 0.35 * s))),
        "rotate": (1.0, 0, Rotate(max_degrees=5.0 + 40.0 * s)),
        "hflip": (1.0, 0, HFlip()),
        "perspective": (0.5, 0, PerspectiveTransform(min_sigma=0.01, max_sigma=0.01 + 0.09 * s)),
        "aspect": (0.5, 0, ChangeAspectRatio(min_ratio=1.0 / (1.0 + s), max_ratio=1.0 + s)),
        "color_jitter": (2.0, 1, ColorJitter(brightness=0.6 * s, contrast=0.6 * s, saturation=min(1.0, s))),
        "grayscale": (0.5, 1, Grayscale()),
        "blur": (1.0, 1, Blur(min_radius=0.5, max_radius=0.5 + 3.5 * s)),
        "pixelization": (0.5, 1, Pixelization(min_ratio=max(0.05, 0.5 - 0.4 * s), max_ratio=0.6)),
        "noise": (0.5, 1, RandomNoise(min_std=0.01, max_std=0.01 + 0.1 * s)),
        "overlay_text": (1.5, 2, OverlayText(min_font_size=0.05, max_font_size=0.05 + 0.2 * s, max_lines=3)),
        "overlay_emoji": (1.5, 2, OverlayEmoji(min_size=0.1, max_size=0.1 + 0.4 * s)),
        "overlay_stripes": (0.5, 2, OverlayStripes(max_width=0.1 + 0.4 * s, min_opacity=0.2, max_opacity=0.3 + 0.7 * s)),
        "pad": (0.5, 3, Pad(max_factor=0.1 + 0.4 * s)),
        "overlay_onto_background": (1.0, 3, OverlayOntoBackground(min_size=max(0.3, 0.9 - 0.6 * s), max_size=0.95)),
        "meme_format": (1.0, 3, MemeFormat(min_caption=0.1, max_caption=0.1 + 0.3 * s)),
        "overlay_onto_screenshot": (1.0, 3, OverlayOntoScreenshot()),
        "jpeg": (2.0, 4, Jpeg(min_quality=max(5, int(90 - 80 * s)), max_quality=max(10, int(95 - 40 * s)))),
    }


class Disc21Like(_Chain):
    """DISC21-style copy: a random chain of min_ops..max_ops AugLy ops (crops, overlays, JPEG, colour,
    rotation, meme / screenshot layouts...) drawn with weights, at a strength in [0, 1]."""

    def __init__(self, strength: float = 0.5, min_ops: int = 1, max_ops: int = 3) -> None:
        _range("disc21_like strength", 0.0, strength, high=1.0)
        self.strength = strength
        super().__init__("disc21_like", min_ops, max_ops)
        self.ops = _graded_ops(strength)


class Mix(_Chain):
    """A random chain of min_ops..max_ops of the named ``augly.*`` transforms (default parameters), drawn
    with ``weights`` (uniform by default) and applied in the order given."""

    def __init__(self, ops: list[str] | None = None, weights: list[float] | None = None, min_ops: int = 1,
                 max_ops: int = 3) -> None:
        names = list(ops) if ops is not None else ["augly.crop", "augly.rotate", "augly.color_jitter",
                                                    "augly.overlay_text", "augly.overlay_emoji", "augly.jpeg"]
        chainable = {k: v for k, v in TRANSFORMS.items() if not issubclass(v, _Chain)}
        unknown = [n for n in names if n not in chainable]
        _require(not unknown, f"augly.mix: unknown ops {unknown}; choose among {sorted(chainable)}")
        _require(len(set(names)) == len(names), f"augly.mix: ops listed twice in {names}")
        weights = list(weights) if weights is not None else [1.0] * len(names)
        _require(len(weights) == len(names), f"augly.mix: {len(weights)} weights for {len(names)} ops")
        _require(all(w >= 0 for w in weights) and sum(weights) > 0, "augly.mix: weights must be >= 0, not all 0")
        super().__init__("augly.mix", min_ops, max_ops)
        self.ops = {n: (float(w), i, chainable[n]()) for i, (n, w) in enumerate(zip(names, weights)) if w > 0}


TRANSFORMS: dict[str, Callable[..., _Transform]] = {
    "augly.crop": Crop,
    "augly.rotate": Rotate,
    "augly.hflip": HFlip,
    "augly.vflip": VFlip,
    "augly.scale": Scale,
    "augly.change_aspect_ratio": ChangeAspectRatio,
    "augly.skew": Skew,
    "augly.perspective_transform": PerspectiveTransform,
    "augly.pad": Pad,
    "augly.pad_square": PadSquare,
    "augly.brightness": Brightness,
    "augly.contrast": Contrast,
    "augly.saturation": Saturation,
    "augly.sharpen": Sharpen,
    "augly.color_jitter": ColorJitter,
    "augly.grayscale": Grayscale,
    "augly.convert_color": ConvertColor,
    "augly.blur": Blur,
    "augly.pixelization": Pixelization,
    "augly.jpeg": Jpeg,
    "augly.pil_filter": PilFilter,
    "augly.random_noise": RandomNoise,
    "augly.shuffle_pixels": ShufflePixels,
    "augly.overlay_text": OverlayText,
    "augly.overlay_emoji": OverlayEmoji,
    "augly.overlay_stripes": OverlayStripes,
    "augly.overlay_onto_background": OverlayOntoBackground,
    "augly.overlay_onto_screenshot": OverlayOntoScreenshot,
    "augly.meme_format": MemeFormat,
    "augly.mix": Mix,
    "augly.disc21_like": Disc21Like,
}
