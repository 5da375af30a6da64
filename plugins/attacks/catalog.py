"""Every attack by the name specs use (names and first parameters as in the issue, so specs stay portable)."""

from __future__ import annotations

from typing import Callable

from .base import Attack
from .codecs import Jpeg, Webp
from .color import Brightness, Contrast, Grayscale, Hue, Saturation, Sharpness
from .geometry import CenterCrop, CropSide, HFlip, NoAttack, Resize, ResizedCrop, Rotate
from .overlays import Meme, OverlayEmoji, OverlayText, Screenshot
from .pixel import Blur, BlurRadius, Erase, Median, Noise, Pixelize

ATTACKS: dict[str, Callable[..., Attack]] = {
    "attack.none": NoAttack,
    "attack.rotate": Rotate,
    "attack.center_crop": CenterCrop,
    "attack.resize": Resize,
    "attack.crop_side": CropSide,
    "attack.resized_crop": ResizedCrop,
    "attack.hflip": HFlip,
    "attack.blur": Blur,
    "attack.blur_radius": BlurRadius,
    "attack.median": Median,
    "attack.pixelize": Pixelize,
    "attack.noise": Noise,
    "attack.erase": Erase,
    "attack.jpeg": Jpeg,
    "attack.webp": Webp,
    "attack.contrast": Contrast,
    "attack.brightness": Brightness,
    "attack.saturation": Saturation,
    "attack.sharpness": Sharpness,
    "attack.hue": Hue,
    "attack.grayscale": Grayscale,
    "attack.overlay_text": OverlayText,
    "attack.overlay_emoji": OverlayEmoji,
    "attack.meme": Meme,
    "attack.screenshot": Screenshot,
}
