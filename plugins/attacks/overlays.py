"""Overlay and layout attacks with fixed, deterministic parameters (AugLy's defaults unless set).

Every asset (fonts, emoji, screenshot templates) ships inside the augly wheel: nothing is fetched. AugLy's
functions are called directly for the emoji and the screenshot; ``overlay_text`` is re-drawn here because
AugLy's default text is random (drawn at import), and ``meme_format`` because it calls a Pillow API
removed in Pillow 10 (its layout is kept, with the text metrics it used).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from .base import Attack, CaptionHeight, Color, Position, UnitFraction, require


def _functional():
    import augly.image.functional as F  # heavy: imported only when an attack is created or runs

    return F


def _did_you_mean(value: str, names: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(value, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" ({len(names)} files, e.g. {names[0]!r})"


@lru_cache(maxsize=1)
def font_names() -> tuple[str, ...]:
    """AugLy's bundled TrueType fonts, by file name, sorted."""
    from augly import utils

    return tuple(sorted(f for f in os.listdir(utils.FONTS_DIR) if f.endswith(".ttf")))


@lru_cache(maxsize=1)
def emoji_names() -> tuple[str, ...]:
    """AugLy's bundled Twemoji, as paths relative to its emoji folder, sorted."""
    from augly import utils

    root = utils.EMOJI_DIR
    return tuple(sorted(
        os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
        for d, _, files in os.walk(root) for f in files if f.endswith(".png")
    ))


class OverlayText(Attack):
    """Text drawn over the image, AugLy overlay_text layout, with a fixed string.

    AugLy's own default text is 5 random characters drawn from Python's ``random`` when augly is
    imported (different in every process), so the text here is a parameter: one line of ``text`` in
    ``font`` (one of AugLy's bundled TrueType files; default its meme font, Raleway ExtraBold).
    ``font_size`` is the font size as a fraction of the shorter side (0.15, AugLy's default); ``x_pos``
    / ``y_pos`` place the text's anchor (left edge, ascender line) at fractions of the width / height
    (AugLy's defaults 0.0 / 0.5); ``color`` is RGB (AugLy's red). AugLy's ``opacity`` is not offered: it
    only sets the alpha of an RGBA copy, which the RGB result drops, so the text is always opaque.
    """

    op = "overlay_text"

    def __init__(self, text: str = "Sample text", font: str = "Raleway-ExtraBold.ttf",
                 font_size: UnitFraction = 0.15, color: Color = (255, 0, 0), x_pos: Position = 0.0,
                 y_pos: Position = 0.5) -> None:
        require("\n" not in text and text.strip() != "", "attack.overlay_text: text must be one non-empty line")
        fonts = font_names()
        require(font in fonts, f"attack.overlay_text: font {font!r} is not one of AugLy's bundled fonts"
                + _did_you_mean(font, fonts))
        color = tuple(int(c) for c in color)
        super().__init__(text=text, font=font, font_size=float(font_size), color=list(color),
                         x_pos=float(x_pos), y_pos=float(y_pos))
        self.text, self.font, self.font_size, self.color = text, font, float(font_size), color
        self.x_pos, self.y_pos = float(x_pos), float(y_pos)

    def apply(self, image, rng):
        from augly import utils
        from PIL import ImageDraw, ImageFont

        width, height = image.size
        size = int(min(width, height) * self.font_size)
        require(size >= 1, f"attack.overlay_text: font_size {self.font_size} is 0 px on a {width}x{height} image")
        font = ImageFont.truetype(os.path.join(utils.FONTS_DIR, self.font), size)
        out = image.copy()
        ImageDraw.Draw(out).text((self.x_pos * width, self.y_pos * height), self.text, fill=self.color, font=font)
        return out


class OverlayEmoji(Attack):
    """AugLy overlay_emoji: a bundled Twemoji pasted at a fixed place.

    One of AugLy's bundled Twemoji pasted over the image (AugLy ``overlay_emoji``, its defaults).

    ``size`` is the emoji's height as a fraction of the image height (0.15); ``x_pos`` / ``y_pos`` place
    its top-left corner as fractions of the width / height (0.4, 0.8); ``opacity`` scales its alpha;
    ``emoji`` names the file under AugLy's twemojis folder (default: AugLy's, the heart-eyes smiley).
    """

    op = "overlay_emoji"

    def __init__(self, emoji: str = "smileys/smiling_face_with_heart_eyes.png", size: UnitFraction = 0.15,
                 opacity: UnitFraction = 1.0, x_pos: Position = 0.4, y_pos: Position = 0.8) -> None:
        names = emoji_names()
        require(emoji in names, f"attack.overlay_emoji: emoji {emoji!r} is not one of AugLy's bundled emoji"
                + _did_you_mean(emoji, names))
        super().__init__(emoji=emoji, size=float(size), opacity=float(opacity), x_pos=float(x_pos),
                         y_pos=float(y_pos))
        self.emoji, self.size, self.opacity = emoji, float(size), float(opacity)
        self.x_pos, self.y_pos = float(x_pos), float(y_pos)

    def apply(self, image, rng):
        from augly import utils

        return _functional().overlay_emoji(
            image, emoji_path=os.path.join(utils.EMOJI_DIR, *self.emoji.split("/")), opacity=self.opacity,
            emoji_size=self.size, x_pos=self.x_pos, y_pos=self.y_pos)


class Meme(Attack):
    """AugLy meme_format: a caption band with centred text above the image.

    A meme: a white band of ``caption_height`` pixels above the image with ``text`` centred in black,
    in AugLy's meme font (Raleway ExtraBold): AugLy's ``meme_format`` with its defaults ("LOL", 250 px).

    The font starts at caption_height - 10 px and shrinks by 5 px until the text fits within 5 px margins;
    it is placed as AugLy places it, from the text size Pillow < 10 reported (right and bottom edges of
    the text box, the height being that of "A"). One line only. The output is taller than the input by
    ``caption_height`` pixels.
    """

    op = "meme"

    def __init__(self, text: str = "LOL", caption_height: CaptionHeight = 250) -> None:
        require("\n" not in text and text.strip() != "", "attack.meme: text must be one non-empty line")
        super().__init__(text=text, caption_height=int(caption_height))
        self.text, self.caption_height = text, int(caption_height)

    def apply(self, image, rng):
        from augly import utils
        from PIL import Image, ImageDraw, ImageFont

        width, height = image.size
        size = self.caption_height - 10
        while True:
            font = ImageFont.truetype(utils.MEME_DEFAULT_FONT, size)
            text_w = font.getbbox(self.text)[2]  # Pillow < 10 getsize(): right and bottom of the box
            text_h = font.getbbox("A")[3]  # getsize_multiline of one line: the height of "A"
            if (text_w <= width - 10 and text_h <= self.caption_height - 10) or size <= 5:
                break  # AugLy would reach size 0 and fail; the smallest size is kept instead
            size -= 5
        out = Image.new("RGB", (width, height + self.caption_height), (255, 255, 255))
        out.paste(image, (0, self.caption_height))
        ImageDraw.Draw(out).text((round((width - text_w) / 2), round((self.caption_height - text_h) / 2)),
                                 self.text, fill=(0, 0, 0), font=font)
        return out


class Screenshot(Attack):
    """AugLy overlay_onto_screenshot: the image inside a web or mobile template.

    The image inside a social-network screenshot template (AugLy ``overlay_onto_screenshot``).

    ``template`` web is AugLy's default and so what SSL watermarking and active indexing used (they
    call the function with no argument); mobile is the phone template. The image is scaled to fit the
    template's picture box and padded with black (or, with ``crop_src_to_fit``, cropped to it); the
    output has the template's size (1200 x 736 web, 414 x 736 mobile).
    """

    op = "screenshot"

    def __init__(self, template: Literal["web", "mobile"] = "web", crop_src_to_fit: bool = False) -> None:
        super().__init__(template=template, crop_src_to_fit=bool(crop_src_to_fit))
        self.template, self.crop_src_to_fit = template, bool(crop_src_to_fit)

    def apply(self, image, rng):
        from augly import utils

        return _functional().overlay_onto_screenshot(
            image, template_filepath=os.path.join(utils.SCREENSHOT_TEMPLATES_DIR, f"{self.template}.png"),
            template_bboxes_filepath=utils.BBOXES_PATH, crop_src_to_fit=self.crop_src_to_fit,
            resize_src_to_match_template=True)
