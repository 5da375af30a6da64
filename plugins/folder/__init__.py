"""A dataset of the images in a folder (a user's own images), for pipelines that need images only."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_datasets(register):
    from .dataset import ImageFolder

    register("image_folder", ImageFolder)
