"""Multimodal (CLIP-like) descriptors from open_clip: image and text embeddings, local weights only."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_descriptors(register):
    from .descriptor import OpenClipDescriptor

    register("openclip", OpenClipDescriptor)
