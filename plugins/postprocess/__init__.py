"""Descriptor post-processing: PCA, PCA-whitening (fitted on the training split), L2 normalization,
dimensionality cap, and DISC21 score normalization with training-set neighbours."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_postprocessors(register):
    from .steps import POSTPROCESSORS

    for name, factory in POSTPROCESSORS.items():
        register(name, factory)
