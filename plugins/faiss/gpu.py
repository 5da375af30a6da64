"""Where exact (Flat) faiss searches run: on a GPU when faiss has GPU support and sees one, else on the CPU.

``device``: ``auto`` (a GPU when available, else the CPU), ``cpu``, or ``gpu`` (an error when none
is available). Availability is what faiss itself reports: a build with GPU support (``faiss-gpu``,
which has ``StandardGpuResources``) and ``faiss.get_num_gpus() > 0`` (``CUDA_VISIBLE_DEVICES=``
hides them). The CPU path is the one of :mod:`.search`, unchanged; on a GPU each database block
is copied once into a ``GpuIndexFlatL2`` / ``GpuIndexFlatIP`` and searched there, and a request
for more than :data:`GPU_MAX_K` neighbours (faiss GPU's selection limit) goes to the CPU for that call.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np

from harness.errors import UserError

DEVICES = ("auto", "cpu", "gpu")
Device = Literal["auto", "cpu", "gpu"]
#: Largest k faiss's GPU k-selection takes (its ``GPU_MAX_SELECTION_K``).
GPU_MAX_K = 2048

_resources: dict[int, Any] = {}  # one StandardGpuResources per process and GPU (its scratch memory is reused)


def check_device(device: Any, what: str = "index faiss") -> str:
    if device not in DEVICES:
        raise UserError(f"{what}: device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def gpu_count(faiss: Any) -> int:
    """GPUs faiss can use: 0 for a CPU-only build (no ``StandardGpuResources``) or when none is visible."""
    if not hasattr(faiss, "StandardGpuResources") or not callable(getattr(faiss, "get_num_gpus", None)):
        return 0
    try:
        return max(0, int(faiss.get_num_gpus()))
    except Exception:  # noqa: BLE001 - a broken driver counts as no GPU (auto falls back to the CPU)
        return 0


def resolve(device: str, faiss: Any = None, what: str = "index faiss") -> Literal["cpu", "gpu"]:
    """``cpu`` or ``gpu`` for a ``device`` setting, from what faiss reports."""
    check_device(device, what)
    if device == "cpu":
        return "cpu"
    if faiss is None:
        import faiss
    if gpu_count(faiss) > 0:
        return "gpu"
    if device == "gpu":
        reason = ("this faiss has no GPU support (install faiss-gpu)" if not hasattr(faiss, "StandardGpuResources")
                  else "faiss sees no GPU")
        raise UserError(f"{what}: device 'gpu' asked for, but {reason}; use device: auto or cpu")
    return "cpu"


def resources(faiss: Any, gpu: int = 0) -> Any:
    if gpu not in _resources:
        _resources[gpu] = faiss.StandardGpuResources()
    return _resources[gpu]


def gpu_block_search(queries: np.ndarray, block: np.ndarray, metric: str,
                     cpu_search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
                     ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """``search(xq, kk) -> (distances, indices)`` over ``block`` held in GPU memory (copied once);
    ``cpu_search`` answers the calls deeper than :data:`GPU_MAX_K`."""
    import faiss

    cls = faiss.GpuIndexFlatL2 if metric == "l2" else faiss.GpuIndexFlatIP
    index = cls(resources(faiss), int(block.shape[1]))
    index.add(np.ascontiguousarray(block, dtype=np.float32))

    def search(xq: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        if kk > GPU_MAX_K:
            return cpu_search(xq, kk)
        return index.search(np.ascontiguousarray(xq, dtype=np.float32), kk)

    return search
