"""The attack base class, the parameter types the attack factories share, and chains of attacks.

An attack is a transform (``attack(image, rng) -> image``, RGB in and out) whose strength is one absolute
number written in the spec (JPEG at quality 50, rotation by exactly 25 degrees). It never modifies its
input, and it draws nothing from ``rng`` unless its definition is random (``uses_rng``: the noise of
``attack.noise``, the position of ``attack.erase`` and ``attack.resized_crop``). ``operations()`` returns
the record of what it applied, one dict per operation: ``[{"op": "rotate", "degrees": 25.0, ...}]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Sequence

import annotated_types as at
import numpy as np

from harness.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


def _odd(value: int) -> bool:
    return value % 2 == 1


_odd.__qualname__ = "odd"  # how pydantic names the failed check: "Predicate 'odd' failed"

# Parameter types: their bounds are checked at spec validation, with file:line (harness.params).
Degrees = Annotated[float, at.Ge(-360.0), at.Le(360.0)]
AreaFraction = Annotated[float, at.Gt(0.0), at.Le(1.0)]  # (0, 1]: a crop keeping no pixel is refused
Factor = Annotated[float, at.Ge(0.0), at.Le(100.0)]  # ImageEnhance factors: 0 = degenerate image, 1 = identity
HueShift = Annotated[float, at.Ge(-0.5), at.Le(0.5)]
Quality = Annotated[int, at.Ge(0), at.Le(100)]
OddKernel = Annotated[int, at.Ge(1), at.Le(1001), at.Predicate(_odd)]
Radius = Annotated[float, at.Ge(0.0), at.Le(1000.0)]
UnitSigma = Annotated[float, at.Ge(0.0), at.Le(1.0)]
UnitFraction = Annotated[float, at.Ge(0.0), at.Le(1.0)]
Position = Annotated[float, at.Ge(0.0), at.Le(1.0)]
Channel = Annotated[int, at.Ge(0), at.Le(255)]
Color = tuple[Channel, Channel, Channel]
CaptionHeight = Annotated[int, at.Ge(20), at.Le(4000)]


def rgb(image: "Image.Image") -> "Image.Image":
    return image if image.mode == "RGB" else image.convert("RGB")


def require(ok: bool, message: str) -> None:
    """For checks the signature cannot express (they fail when the part is created, before any data)."""
    if not ok:
        raise UserError(message)


def scaled_side(side: int, factor: float) -> int:
    """``int(side * factor)``, as the reference code writes it, but never 0 (an empty image is useless)."""
    return max(1, int(side * factor))


class Attack:
    """Base: converts to RGB around :meth:`apply`; subclasses set ``op`` and record their parameters."""

    op: ClassVar[str] = ""
    uses_rng: ClassVar[bool] = False
    version = "1"

    def __init__(self, **params: Any) -> None:
        self._params = params  # absolute values, JSON-ready: what operations() records

    def __call__(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image":
        return rgb(self.apply(rgb(image), rng))

    def apply(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image":
        raise NotImplementedError

    def operations(self) -> list[dict[str, Any]]:
        """The record of what this attack applies: ``[{"op": name, **absolute parameters}]``."""
        return [{"op": self.op, **self._params}]

    def describe_operation(self) -> dict[str, Any]:
        return self.operations()[0]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"


class Chain:
    """Attacks applied in order (the stable-signature combination is ``[crop 0.5, brightness 1.5,
    JPEG 80]``); the rng is passed to each in turn, so a chain is as reproducible as its parts."""

    version = "1"

    def __init__(self, attacks: Sequence[Any]) -> None:
        require(len(attacks) > 0, "a chain needs at least one attack")
        self.attacks = list(attacks)
        self.uses_rng = any(getattr(a, "uses_rng", True) for a in self.attacks)

    def __call__(self, image: "Image.Image", rng: np.random.Generator) -> "Image.Image":
        for attack in self.attacks:
            image = attack(image, rng)
        return rgb(image)

    def operations(self) -> list[dict[str, Any]]:
        return [op for attack in self.attacks for op in attack.operations()]

    def __repr__(self) -> str:
        return f"Chain({self.attacks!r})"

