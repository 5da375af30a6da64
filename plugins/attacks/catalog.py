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

#: Typical strengths, one per attack (from the published grids), for documentation and contract checks.
EXAMPLE_PARAMS: dict[str, dict] = {
    "attack.rotate": {"degrees": 25},
    "attack.center_crop": {"area": 0.5},
    "attack.resize": {"area": 0.5},
    "attack.crop_side": {"ratio": 0.5},
    "attack.resized_crop": {"area": 0.5},
    "attack.blur": {"kernel": 11},
    "attack.blur_radius": {"radius": 3},
    "attack.median": {"kernel": 3},
    "attack.pixelize": {"ratio": 0.3},
    "attack.noise": {"sigma": 0.05},
    "attack.erase": {"fraction": 0.25},
    "attack.jpeg": {"quality": 50},
    "attack.webp": {"quality": 50},
    "attack.contrast": {"factor": 0.5},
    "attack.brightness": {"factor": 1.5},
    "attack.saturation": {"factor": 2.0},
    "attack.sharpness": {"factor": 2.0},
    "attack.hue": {"shift": 0.2},
}
