"""The kinds of parts, each with the hook that registers it (see :mod:`harness.hookspecs`). A module of
its own so that the CLI can name the kinds without loading the plugin machinery."""

from __future__ import annotations

#: kind (as used in messages and ``harness list KIND``) -> hook name.
KINDS: dict[str, str] = {
    "pipeline": "register_pipelines",
    "dataset": "register_datasets",
    "transform": "register_transforms",
    "descriptor": "register_descriptors",
    "postprocessor": "register_postprocessors",
    "index": "register_indexes",
    "watermarker": "register_watermarkers",
    "composer": "register_composers",
    "metric": "register_metrics",
    "scorer": "register_scorers",
}
