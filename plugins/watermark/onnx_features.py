"""A torch feature extractor run by onnxruntime, for detection on the CPU.

Detection is inference only, at each image's own resolution. onnxruntime folds batch norms into
convolutions, fuses activations and keeps its blocked memory layouts, where eager torch re-orders per
call. Measured here (bench_watermark_grid.py): on a quiet 2-core CPU about as fast as torch's
channels-last path; on cores shared with other jobs far less slowed than torch's OpenMP threads
(2-5x faster than a torch loop there). The network is exported once per process
(batch, height and width dynamic); features agree with torch's to float32 rounding (the benchmark and
the tests check it). Networks the exporter cannot handle fall back to torch, with the reason kept.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


class OnnxFeatures:
    """``features(x: float32 (B, 3, H, W) numpy) -> float32 (B, D) numpy`` via onnxruntime."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def export(model: "torch.nn.Module", embed: Callable[["torch.Tensor"], "torch.Tensor"], example: "torch.Tensor",
           threads: int) -> tuple[OnnxFeatures | None, str | None]:
    """(features, None), or (None, why) when the network does not export or does not load. ``embed``
    is the feature function (pooling included) over ``model``, whose weights it uses."""
    import torch

    from .invisible import onnxruntime_module

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model  # registered, so its weights export as initialisers

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return embed(x)

    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
            torch.onnx.export(Embed(), (example.contiguous(),), buf, input_names=["x"], output_names=["f"],
                              dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "f": {0: "b"}}, dynamo=False)
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime refusal means: stay on torch
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return None, f"{type(exc).__name__}: {first}"
    return OnnxFeatures(session), None
