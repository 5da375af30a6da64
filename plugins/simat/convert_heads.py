"""Convert SIMAT's pickled files (the learned heads ``head_clip_t=*.pt``, the OSCAR matrix ``.pt``)
into safetensors without running any pickle code.

Usage: ``python -m harness_plugins.simat.convert_heads IN.pt OUT.safetensors [--name NAME]``

The input is a ``torch.save`` zip archive (``<dir>/data.pkl`` + ``<dir>/data/<key>`` storages). Its
pickle is read by an unpickler whose ``find_class`` resolves only a whitelist, each mapped to a
harmless local stand-in (torch is never imported):

- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``: build a numpy array from a storage,
  with offset, shape and strides checked against the storage's size;
- ``torch.<Type>Storage``: a dtype tag; the bytes come from the archive entry the persistent id
  names (size-checked);
- ``collections.OrderedDict`` and ``builtins.set``: plain containers;
- ``torch.nn.modules.linear.Linear``: an inert stub that only stores the state dict pickle gives it
  (``_parameters`` / ``_buffers``); no torch.nn code runs.

Anything else (``os.system``, ``builtins.eval``, other modules) is refused before it is called. Output
names: nested dict keys (a list of (name, tensor) pairs counts as a dict) and module parameters joined by ``.`` (SIMAT's heads: ``img_head.weight``,
``img_head.bias``, ``txt_head.weight``, ``txt_head.bias``); a bare tensor is stored as ``--name``
(default ``tensor``).
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import SubmissionError, UserError

#: SIMAT's heads are 2 MB, its OSCAR matrix about 15 MB.
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024 * 1024
MAX_PICKLE_BYTES = 64 * 1024 * 1024

_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    def __init__(self, data: np.ndarray) -> None:
        self.data = data  # 1-D


class LinearStub:
    """Stands in for torch.nn.Linear: keeps the pickled state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("Linear: unexpected state")
        self.state = state

    def tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if v is not None:
                    out[str(k)] = v
        return out


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise pickle.UnpicklingError(f"bad tensor geometry: offset {offset!r}, size {size!r}, stride {stride!r}")
    data = storage.data
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=data.dtype)
    if int(np.prod(size, dtype=object)) > len(data):  # stride-0 tricks would multiply memory
        raise pickle.UnpicklingError(f"tensor of size {size} has more elements than its storage ({len(data)})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(data):
        raise pickle.UnpicklingError(f"tensor of size {size} at offset {offset} reads past its storage "
                                     f"({len(data)} elements)")
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False
    )
    return np.array(view)  # a copy: no aliasing of the archive bytes


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("parameter without a tensor")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("torch.nn.modules.linear", "Linear"): LinearStub,
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.byteorder, self.source = archive, prefix, byteorder, source
        self.storages: dict[str, _Storage] = {}
        self.bytes_read = 0

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}: only tensors, containers and "
                                     "nn.Linear state are allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        stype, key, numel = pid[1], pid[2], pid[4]
        if key in self.storages:
            return self.storages[key]
        entry = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(entry)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None
        need = numel * stype.itemsize
        if numel < 0 or info.file_size < need:
            raise pickle.UnpicklingError(f"storage {key}: {info.file_size} bytes for {numel} elements")
        self.bytes_read += need
        if self.bytes_read > MAX_ARCHIVE_BYTES:
            raise pickle.UnpicklingError(f"storages hold more than {MAX_ARCHIVE_BYTES:,} bytes")
        with self.archive.open(entry) as fh:  # only the bytes the tensor needs, whatever the entry claims
            raw = fh.read(need)
        if len(raw) != need:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        order = "<" if self.byteorder == "little" else ">"
        if stype.dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 exactly
            bits = np.frombuffer(raw, dtype=f"{order}u2").astype(np.uint32) << 16
            data = bits.view(np.float32)
        else:
            dt = np.dtype(stype.dtype).newbyteorder(order) if np.dtype(stype.dtype).itemsize > 1 else np.dtype(stype.dtype)
            data = np.frombuffer(raw, dtype=dt).astype(np.dtype(stype.dtype).newbyteorder("="))
        self.storages[key] = _Storage(data)
        return self.storages[key]


def read_torch_archive(path: str | Path) -> Any:
    """The object of a ``torch.save`` zip archive, with tensors as numpy arrays and nn.Linear modules as
    :class:`LinearStub`; refuses any other global. Raises SubmissionError naming the file."""
    from harness.submissions import check_file

    path = Path(path)
    check_file(path, MAX_ARCHIVE_BYTES)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            head = fh.read(2)
        hint = (" (a legacy, pre-1.6 torch.save file: re-save it with a recent torch, or ask for that format)"
                if head[:1] == b"\x80" else "")
        raise SubmissionError(path, f"not a torch.save zip archive{hint}") from None
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise SubmissionError(path, f"expected one <dir>/data.pkl in the archive, found {len(pkls)}")
        prefix = pkls[0][: -len("data.pkl")]
        info = archive.getinfo(pkls[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise SubmissionError(path, f"data.pkl is {info.file_size:,} bytes, over {MAX_PICKLE_BYTES:,}")
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise SubmissionError(path, f"unknown byteorder {byteorder!r}")
        try:
            return _TensorUnpickler(archive.read(pkls[0]), archive, prefix, byteorder, str(path)).load()
        except pickle.UnpicklingError as exc:
            raise SubmissionError(path, f"refused: {exc}") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError,
                RecursionError, zipfile.BadZipFile) as exc:
            raise SubmissionError(path, f"corrupt archive: {type(exc).__name__}: {exc}") from None


def _is_pairs(x: Any) -> bool:
    """A list of (name, value) pairs, as ``dict(...)`` takes (SIMAT's simat_words_clip.ptd)."""
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(p, tuple) and len(p) == 2 for p in x)


def flatten(obj: Any, name: str = "tensor") -> dict[str, np.ndarray]:
    """Tensors of a read archive by dotted name (dicts and Linear stubs descend; other leaves refused)."""
    out: dict[str, np.ndarray] = {}

    def walk(x: Any, key: str) -> None:
        if isinstance(x, np.ndarray):
            out[key or name] = x
        elif isinstance(x, LinearStub):
            for k, v in x.tensors().items():
                walk(v, f"{key}.{k}" if key else k)
        elif isinstance(x, dict) or _is_pairs(x):
            for k, v in (x.items() if isinstance(x, dict) else x):
                if not isinstance(k, str):
                    raise UserError(f"non-string key {k!r} in the archive")
                walk(v, f"{key}.{k}" if key else k)
        else:
            raise UserError(f"{key or 'top level'}: a {type(x).__name__}, not a tensor, module or dict")

    walk(obj, "")
    if not out:
        raise UserError("no tensors in the archive")
    return out


def convert(src: str | Path, dst: str | Path, name: str = "tensor") -> dict[str, tuple[int, ...]]:
    """Read ``src`` safely and write its tensors to the safetensors file ``dst``; returns name -> shape."""
    from safetensors.numpy import save_file

    try:
        tensors = flatten(read_torch_archive(src), name)
    except SubmissionError:
        raise
    except UserError as exc:
        raise SubmissionError(src, str(exc)) from None
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    tmp = Path(f"{dst}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(dst)
    return {k: tuple(v.shape) for k, v in tensors.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness_plugins.simat.convert_heads", description=__doc__.split("\n")[0])
    parser.add_argument("input", help="a torch.save file (SIMAT's head_clip_t=0.1.pt, oscar_similarity_matrix.pt)")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--name", default="tensor", help="name of a bare tensor in the output (default: tensor)")
    args = parser.parse_args(argv)
    try:
        shapes = convert(args.input, args.output, args.name)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, s in shapes.items():
        print(f"{k}\t{'x'.join(map(str, s))}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
