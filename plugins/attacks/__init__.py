"""Exact, deterministic attacks for robustness tables: each takes one absolute strength from the spec
(``attack.jpeg`` quality 50, ``attack.rotate`` by exactly 25 degrees) and records the operation it
applied (``operations()``). Only ``attack.noise``, ``attack.erase`` and ``attack.resized_crop`` draw from
the item's rng (the noise, the position of the square)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_transforms(register):
    from .catalog import ATTACKS

    for name, factory in ATTACKS.items():
        register(name, factory)
