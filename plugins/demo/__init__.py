"""The offline demo track: a small copy-detection benchmark in the DISC21 layout, built on the fly from
images that ship inside installed packages, with AugLy-transformed queries."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_datasets(register):
    from .dataset import DemoCopyDetection

    register("demo", DemoCopyDetection)
