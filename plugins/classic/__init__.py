"""Descriptors that need no learned weights (so every track runs offline): GIST-like global
descriptor, perceptual hash, colour histogram, and a content-blind random baseline."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_descriptors(register):
    from .descriptors import DESCRIPTORS

    for name, factory in DESCRIPTORS.items():
        register(name, factory)
