"""Safe readers for untrusted files: submissions (CSV, HDF5, NPY) and ground truth (CSV, pickle, JSON).

Every reader checks the file size first, never runs code from the file (no pickle, ``allow_pickle=False``,
no HDF5 links to other files), validates types, shapes, NaN/inf and duplicates, and raises
:class:`harness.errors.SubmissionError` with one line naming the file, the line or field, and the reason.
Line numbers are 1-based lines of the file as an editor shows them (the header, if any, is line 1).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import SubmissionError, shown
from harness.messages import short_repr

MB = 1024 * 1024
#: 500,000 matching rows take about 15 MB; leave room for long floats and ids.
MAX_CSV_BYTES = 128 * MB
#: 1M references + 100k queries at d = 256 in float64 is about 2.2 GB.
MAX_H5_BYTES = 4 * 1024 * MB
#: R1M rankings of 70 queries in int64 are about 560 MB.
MAX_NPY_BYTES = 2 * 1024 * MB
MAX_GND_BYTES = 64 * MB
#: Id lists and distractor lists: R1M's revisitop1m.txt is about 50 MB.
MAX_TEXT_BYTES = 256 * MB
#: Rows per descriptor dataset: guards against compressed "bombs" whose on-disk size says nothing.
MAX_VECTORS = 2_100_000


# ----------------------------------------------------------------------------------------------- size


def check_file(path: str | os.PathLike[str], max_bytes: int) -> int:
    """Return the size of a regular file, or raise if it is missing, not a file, or over ``max_bytes``."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise SubmissionError(path, "file not found") from None
    except OSError as exc:
        raise SubmissionError(path, f"cannot read: {exc.strerror}") from None
    if not p.is_file():
        raise SubmissionError(path, "not a regular file")
    if st.st_size > max_bytes:
        raise SubmissionError(path, f"file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit")
    return st.st_size


# ------------------------------------------------------------------------------------------------ CSV


def _decode(path: str | os.PathLike[str], data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SubmissionError(path, "not valid UTF-8 text", where=f"line {line}") from None


def read_text_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a (list) file, size-checked; a missing, unreadable or non-UTF-8 file raises
    :class:`SubmissionError` naming it (and the line of the first bad byte)."""
    check_file(path, max_bytes)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SubmissionError(path, f"cannot read: {exc.strerror}") from None
    return _decode(path, data)


def _read_table(path: str | os.PathLike[str], max_bytes: int, header: Sequence[str], max_rows: int | None, what: str):
    from harness.csvtable import read_table

    check_file(path, max_bytes)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SubmissionError(path, f"cannot read: {exc.strerror}") from None
    return read_table(path, data, header, max_rows=max_rows, what=what)


def _first_duplicate(keys: np.ndarray) -> tuple[int, int] | None:
    """Positions (i < j) of the first repeated value in ``keys`` (by second occurrence), or None."""
    if len(keys) < 2:
        return None
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    if not same.any():
        return None
    hits = np.flatnonzero(same)
    second = order[hits + 1]
    k = int(np.argmin(second))
    return int(order[hits[k]]), int(second[k])


def _duplicate_rows(keys: np.ndarray) -> tuple[int, int] | None:
    """:func:`_first_duplicate` of int64 ``keys``, after a linear-time check that one exists."""
    from harness.idcodes import smallest_duplicate

    if smallest_duplicate(keys) is None:
        return None
    return _first_duplicate(keys)


def _codes(ids: np.ndarray) -> tuple[np.ndarray, int]:
    from harness.idcodes import encode_ids

    (codes,), size = encode_ids(ids)
    return codes, size


def _id(value: object) -> str:
    """An id for a message: as is when short and printable, else escaped and cut (:func:`shown`)."""
    text = str(value)
    return text if len(text) <= 40 and text.isprintable() else shown(text)


def _no_empty(path: Any, table: Any, ids: np.ndarray, name: str) -> None:
    empty = np.flatnonzero(np.strings.str_len(ids) == 0)
    if len(empty):
        raise SubmissionError(path, f"empty {name}", where=table.where(int(empty[0])))


# ----------------------------------------------------------------------------------------------- HDF5


#: Longest id accepted in an HDF5 id dataset (bytes): DISC21 ids are 6-7 characters.
MAX_ID_BYTES = 256
#: How much larger than its stored bytes a dataset may declare itself (compression); a dataset of
#: 4 GB declared in a 40 KB file (unwritten chunks, a fill value, or a "zip bomb") is refused.
MAX_H5_EXPANSION = 32
_H5_SLACK = 1 << 20


def _check_storage(path: Any, ds: Any, name: str, itemsize: int) -> None:
    """Memory is bounded by bytes on disk: refuse a dataset declaring far more than it stores."""
    declared = int(ds.size) * itemsize
    stored = int(ds.id.get_storage_size())
    if declared > MAX_H5_EXPANSION * stored + _H5_SLACK:
        raise SubmissionError(
            path, f"declares {declared:,} bytes of data but stores {stored:,} on disk (unwritten or over-compressed; "
            f"at most {MAX_H5_EXPANSION}x is accepted)", where=name)


def _read_ids(path: Any, ds: Any, name: str, file_size: int) -> np.ndarray:
    """The raw ids of a 1-D string dataset, in memory bounded by the file: fixed-width ids at most
    :data:`MAX_ID_BYTES` wide; variable-length ids checked on their on-disk references first."""
    import h5py

    info = h5py.check_string_dtype(ds.dtype)
    if ds.dtype.kind == "S":
        if ds.dtype.itemsize > MAX_ID_BYTES:
            raise SubmissionError(path, f"ids are {ds.dtype.itemsize:,} bytes wide, over the limit of {MAX_ID_BYTES}",
                                  where=name)
        _check_storage(path, ds, name, ds.dtype.itemsize)
        return ds[()]
    if info is None or info.length is not None:
        raise SubmissionError(path, f"ids must be strings, got dtype {ds.dtype}", where=name)
    lengths = _vlen_lengths(path, ds, name)
    if len(lengths) and int(lengths.max()) > MAX_ID_BYTES:
        i = int(np.argmax(lengths > MAX_ID_BYTES))
        raise SubmissionError(path, f"id of {int(lengths[i]):,} bytes, over the limit of {MAX_ID_BYTES}",
                              where=f"{name}[{i}]")
    if int(lengths.sum()) > file_size:
        raise SubmissionError(path, "variable-length ids refer to more string data than the file holds", where=name)
    return ds[()]


def _vlen_lengths(path: Any, ds: Any, name: str) -> np.ndarray:
    """Byte length of each variable-length string, read from the dataset's raw on-disk references
    (4-byte length, heap address, 4-byte heap index; little-endian in every HDF5 file) without
    reading the strings: a crafted file could point every element at one huge string."""
    import h5py

    n = int(ds.size)
    lengths = np.zeros(n, np.int64)  # unallocated chunks hold the fill value: empty strings
    if n == 0:
        return lengths
    width = 4 + int(ds.file.id.get_create_plist().get_sizes()[0]) + 4
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is not None:
            lengths[:] = _ref_lengths(_read_at(ds.file.filename, offset, n * width), n, width, path, name)
        return lengths
    if layout == h5py.h5d.CHUNKED and dcpl.get_nfilters() == 0:
        per_chunk = int(ds.chunks[0])
        for i in range(ds.id.get_num_chunks()):
            chunk = ds.id.get_chunk_info(i)
            start = int(chunk.chunk_offset[0])
            count = max(0, min(per_chunk, n - start))
            raw = _read_at(ds.file.filename, chunk.byte_offset, count * width)
            lengths[start : start + count] = _ref_lengths(raw, count, width, path, name)
        return lengths
    raise SubmissionError(path, "variable-length ids must be stored contiguously or in unfiltered chunks "
                                "(or written as fixed-length strings, dtype 'S')", where=name)


def _ref_lengths(raw: bytes, n: int, width: int, path: Any, name: str) -> np.ndarray:
    if len(raw) < n * width:
        raise SubmissionError(path, "truncated variable-length id references", where=name)
    return np.frombuffer(raw, dtype=np.uint8, count=n * width).reshape(n, width)[:, :4].copy().view("<u4")[:, 0]


def _read_at(filename: str, offset: int, size: int) -> bytes:
    with open(filename, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _ascii_ids(path: Any, name: str, raw: np.ndarray) -> np.ndarray:
    """bytes/str id array -> stripped str array; printable ASCII only."""
    if raw.dtype.kind == "O":
        try:
            raw = np.array([x.encode("ascii") if isinstance(x, str) else bytes(x) for x in raw.tolist()], dtype="S")
        except (UnicodeEncodeError, TypeError) as exc:
            raise SubmissionError(path, f"ids must be ASCII strings ({exc})", where=name) from None
    elif raw.dtype.kind == "U":
        raw = np.strings.encode(raw, "ascii") if raw.size else raw.astype("S1")
    if raw.dtype.kind != "S":
        raise SubmissionError(path, f"ids must be strings, got dtype {raw.dtype}", where=name)
    if raw.size == 0:
        return np.zeros(0, dtype="<U1")
    codes = raw.view(np.uint8).reshape(len(raw), -1)
    # control characters, non-ASCII, and a NUL before the end (a fixed-width id is NUL-padded only)
    bad_char = ((codes > 0) & (codes < 32)) | (codes > 126)
    bad_char[:, :-1] |= (codes[:, :-1] == 0) & (codes[:, 1:] != 0)
    if bad_char.any():
        i = int(np.flatnonzero(bad_char.any(axis=1))[0])
        shown = short_repr(bytes(codes[i]).rstrip(b"\0").decode("ascii", "backslashreplace"))
        raise SubmissionError(path, f"id {shown} is not printable ASCII", where=f"{name}[{i}]")
    ids = np.strings.strip(raw.astype("U"))
    empty = np.flatnonzero(np.strings.str_len(ids) == 0)
    if len(empty):
        raise SubmissionError(path, "empty id", where=f"{name}[{int(empty[0])}]")
    dup = _first_duplicate(ids)
    if dup is not None:
        raise SubmissionError(path, f"duplicate id {short_repr(str(ids[dup[0]]))}, also at index {dup[0]}",
                              where=f"{name}[{dup[1]}]")
    return ids


def _dataset(path: Any, f: Any, name: str) -> Any:
    import h5py

    if name not in f:
        raise SubmissionError(path, f"missing dataset {name!r} (expected query, reference, query_ids, reference_ids)")
    link = f.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise SubmissionError(path, "links to other objects or files are not accepted", where=name)
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise SubmissionError(path, "is a group, expected a dataset", where=name)
    if ds.is_virtual or ds.external:
        raise SubmissionError(path, "virtual or external datasets are not accepted", where=name)
    return ds


def _read_float32(ds: Any, block: int = 65536) -> np.ndarray:
    """A float dataset as float32, read in row blocks (a float64 file never sits in memory twice);
    values beyond the float32 range become inf, which the finiteness check then reports."""
    out = np.empty(ds.shape, dtype=np.float32)
    with np.errstate(over="ignore"):
        for start in range(0, ds.shape[0], block):
            out[start : start + block] = ds[start : start + block]
    return out


def _finite_rows(x: np.ndarray, block: int = 65536) -> int | None:
    """First row holding NaN/inf, checked in blocks so memory stays bounded."""
    for start in range(0, len(x), block):
        ok = np.isfinite(x[start : start + block]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


# ------------------------------------------------------------------------------------------------ NPY


def _check_npy_size(path: Any, shape: tuple[int, ...], dtype: np.dtype, data_bytes: int) -> None:
    """The header's shape must match the bytes that follow it: memory is then bounded by the file,
    whatever shape a header declares."""
    if dtype.hasobject:
        return  # refused by the caller, with its own message
    declared = math.prod(shape) * dtype.itemsize
    if declared != data_bytes:
        raise SubmissionError(
            path, f"header declares shape {short_repr(shape)} ({declared:,} bytes of {dtype}) but the file holds "
            f"{data_bytes:,} bytes of data")


# ------------------------------------------------------------------------------------------ revisitop


