"""``watermark.embed`` as a transform: watermarking as a step of a query chain, so copy detection can be
scored on marked (and then attacked) copies with the retrieval pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.params import PartParam


class EmbedTransform:
    """Mark the image with a watermarker; its key comes from the item's generator (seed, id)."""

    version = "1"

    def __init__(self, watermarker: PartParam("watermarker")) -> None:
        """``watermarker``: any registered method, as a nested part (``{name: dwt_dct}``)."""
        self.watermarker = watermarker

    def __call__(self, image: Any, rng: np.random.Generator) -> Any:
        key = int(rng.integers(0, 2**31 - 1))
        return self.watermarker.embed(image.convert("RGB"), key).convert("RGB")

    def operations(self) -> list[dict[str, Any]]:
        spec = getattr(self.watermarker, "harness_spec", None) or {"name": type(self.watermarker).__name__}
        return [{"op": "watermark.embed", "method": spec.get("name")}]
