"""Device, batch size and precision of the torch-based parts, chosen one way for all of them: the timm
and TorchScript descriptors, open_clip, the SSL watermarker's backbone (and, through the descriptor,
active indexing's activation).

- ``device``: ``auto`` (CUDA when torch sees it, else the CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
- ``batch_size``: an integer (every device), or a mapping by device type, e.g. ``{cpu: 32, cuda:
  256}``; a type the mapping leaves out, and ``null``, take the part's defaults (descriptors:
  :data:`DEFAULT_BATCH`). It changes speed and memory, not results (beyond float rounding), so it
  stays out of the cache keys unless written.
- precision: float32 everywhere, with TF32 off on CUDA (torch's default lets cuDNN convolutions
  round inputs to 10 bits), so float32 results agree across devices to rounding and the device stays
  out of the cache keys; ``half: true`` is float16 on CUDA only, where results do differ: the
  descriptor records ``float16`` in its fingerprint then.

torch is imported only by the functions that need a device.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, Union

from harness.errors import UserError
from harness.params import PositiveInt

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_TYPES = ("cpu", "cuda", "mps")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: Descriptor batch sizes when none is given: a GPU takes larger batches than the CPU needs (on the
#: CPU larger batches of large images run no faster: the activations leave the caches).
DEFAULT_BATCH = {"cpu": 32, "cuda": 128, "mps": 32}
#: The annotation of a ``batch_size`` parameter, checked when a spec is validated (and again by
#: :meth:`BatchSizes.parse`, for parts built from Python).
BatchSize = Union[PositiveInt, dict[Literal["cpu", "cuda", "mps"], PositiveInt], None]


def check_device(device: Any) -> str:
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise UserError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (got {device!r})")
    return device


def resolve_device(name: str) -> "torch.device":
    """The torch device for a ``device`` setting; asking for one torch cannot use is one clear error."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r} requested but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} requested but MPS is not available (use device: auto or cpu)")
    return device


@dataclass(frozen=True)
class BatchSizes:
    """Batch size per device type; ``explicit`` when the user gave one (it then wins over the run's
    ``extraction.batch_size``)."""

    sizes: Mapping[str, int]
    explicit: bool

    @classmethod
    def parse(cls, value: Any, defaults: Mapping[str, int] = DEFAULT_BATCH) -> "BatchSizes":
        if value is None:
            return cls(dict(defaults), False)
        if isinstance(value, Mapping):
            sizes = dict(defaults)
            for key, n in value.items():
                if key not in DEVICE_TYPES:
                    close = difflib.get_close_matches(str(key), DEVICE_TYPES + ("gpu",), n=1, cutoff=0.5)
                    hint = " (did you mean 'cuda'?)" if close == ["gpu"] else (f" (did you mean {close[0]!r}?)" if close else "")
                    raise UserError(f"batch_size: unknown device type {key!r}{hint}; expected {', '.join(DEVICE_TYPES)}")
                sizes[key] = _positive(n, f"batch_size.{key}")
            return cls(sizes, True)
        n = _positive(value, "batch_size")
        return cls({t: n for t in DEVICE_TYPES}, True)

    def for_device(self, device: "torch.device | str") -> int:
        kind = device if isinstance(device, str) else device.type
        return int(self.sizes.get(kind, self.sizes["cpu"]))

    @property
    def host_check(self) -> int:
        """The batch size to check host memory against before the device is known: the largest one
        given, or the CPU default (the host holds each input batch before it moves to a device)."""
        return max(self.sizes.values()) if self.explicit else int(self.sizes["cpu"])

    def choose(self, device: "torch.device", configured: int | None) -> int:
        """Extraction batch size: this part's own when given, else the run's ``extraction.batch_size``
        when set, else this part's default for ``device``."""
        if self.explicit or configured is None:
            return self.for_device(device)
        return int(configured)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer (got {value!r})")
    return int(value)


def uses_float16(half: bool, device: "torch.device") -> bool:
    """``half`` takes effect on CUDA only."""
    return bool(half) and device.type == "cuda"


@contextlib.contextmanager
def exact_float32(device: "torch.device") -> Iterator[None]:
    """float32 as IEEE float32 on CUDA: TF32 off for cuDNN convolutions and matmuls (restored after).
    Nothing changes on other devices."""
    if device.type != "cuda":
        yield
        return
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield
    finally:
        matmul.allow_tf32 = before


class OnDevice:
    """The device and batch-size members a torch part shares: set ``device_name`` (a checked device
    string), ``batch_sizes`` (:class:`BatchSizes`) and ``_device = None`` in ``__init__``."""

    device_name: str
    batch_sizes: BatchSizes
    _device: Any

    @property
    def device(self) -> "torch.device":
        if self._device is None:
            self._device = resolve_device(self.device_name)
        return self._device

    @property
    def batch_size(self) -> int:
        """The batch size on :attr:`device` (``describe``; extraction asks :meth:`extraction_batch_size`)."""
        return self.batch_sizes.for_device(self.device)

    def extraction_batch_size(self, configured: int | None = None) -> int:
        """The batch size extraction uses: this part's ``batch_size`` for its device when given, else
        the run's ``extraction.batch_size`` (``configured``) when set, else the default for the device."""
        return self.batch_sizes.choose(self.device, configured)
