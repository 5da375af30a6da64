"""AugLy image transformations as query generators, each with randomised parameters drawn from the
core-provided rng, plus a DISC21-like mix of them."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_transforms(register):
    from .transforms import TRANSFORMS

    for name, factory in TRANSFORMS.items():
        register(name, factory)
