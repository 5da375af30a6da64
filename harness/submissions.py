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


def read_matching_csv(
    path: str | os.PathLike[str], *, max_rows: int = 500_000, max_bytes: int = MAX_CSV_BYTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a matching-track submission ``query_id,reference_id,score`` (header optional).

    Returns ``(query_ids, reference_ids, scores)``: str arrays stripped of whitespace and float64.
    """
    q, r, scores, lines = read_matching_rows(path, max_rows=max_rows, max_bytes=max_bytes)
    check_unique_predictions(path, q, r, lines)
    return q, r, scores


def read_matching_rows(
    path: str | os.PathLike[str], *, max_rows: int = 500_000, max_bytes: int = MAX_CSV_BYTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_matching_csv` without the duplicate check, plus the file line of each row: for a
    caller that finds duplicates anyway (the DISC21 metrics do) and calls
    :func:`check_unique_predictions` only to name their lines."""
    header = ("query_id", "reference_id", "score")
    table = _read_table(path, max_bytes, header, max_rows, "prediction rows")
    scores, bad = table.numbers(2)
    if bad is not None:
        raw = shown(table.field(bad, 2))
        if bad == 0 and not table.has_header:
            raise SubmissionError(
                path,
                f"first row is neither the header {','.join(header)!r} nor a prediction (score {raw} is not a number)",
                where=table.where(0),
            )
        raise SubmissionError(path, f"score {raw} is not a number", where=table.where(bad))
    nonfinite = np.flatnonzero(~np.isfinite(scores))
    if len(nonfinite):
        i = int(nonfinite[0])
        raise SubmissionError(path, f"score {shown(table.field(i, 2))} is not finite", where=table.where(i))
    q, r = table.ids(0), table.ids(1)
    _no_empty(path, table, q, "query_id")
    _no_empty(path, table, r, "reference_id")
    return q, r, scores, table.lines


def check_unique_predictions(path: Any, q: np.ndarray, r: np.ndarray, lines: np.ndarray) -> None:
    """Refuse a repeated (query, reference) pair, naming its first repeat's line and the earlier one."""
    (qc, _), (rc, nr) = _codes(q), _codes(r)
    dup = _duplicate_rows(qc * max(nr, 1) + rc)
    if dup is not None:
        i, j = dup
        raise SubmissionError(
            path, f"duplicate prediction ({_id(q[i])}, {_id(r[i])}), also on line {int(lines[i])}", where=f"line {int(lines[j])}"
        )


def read_pairs_csv(
    path: str | os.PathLike[str],
    *,
    header: tuple[str, str] = ("query_id", "reference_id"),
    max_rows: int | None = 5_000_000,
    max_bytes: int = MAX_CSV_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a ground-truth file ``query_id,reference_id`` (header optional), one row per listed query.

    An empty reference means "listed, no match". Returns ``(query_ids, reference_ids)`` with ``''``
    for no match. A query listed twice (with the same or another reference) is rejected: the protocol
    allows at most one reference per query. A file listing no query (empty, or a header only) is
    rejected too: every metric against it would be 0.
    """
    table = _read_table(path, max_bytes, header, max_rows, "rows")
    if not len(table):
        what = "only a header" if table.has_header else "no rows"
        raise SubmissionError(path, f"{what}: a ground truth must list at least one query")
    q, r = table.ids(0), table.ids(1)
    if not table.has_header and str(q[0]).lower().startswith("query"):
        raise SubmissionError(path, f"wrong header, expected {','.join(header)!r}", where=table.where(0))
    _no_empty(path, table, q, header[0])
    dup = _duplicate_rows(_codes(q)[0])
    if dup is not None:
        i, j = dup
        a = table.where(i)
        qi, ri, rj = (_id(v) if v else "none" for v in (q[i], r[i], r[j]))
        reason = (
            f"query {qi} is listed twice, also on {a}"
            if r[i] == r[j]
            else f"more than one reference for query {qi} ({ri} on {a}, {rj} here)"
        )
        raise SubmissionError(path, reason, where=table.where(j))
    return q, r


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


def read_descriptor_h5(
    path: str | os.PathLike[str],
    *,
    max_dim: int = 256,
    max_bytes: int = MAX_H5_BYTES,
    max_vectors: int = MAX_VECTORS,
) -> dict[str, np.ndarray]:
    """Read a descriptor-track submission: datasets ``query``, ``reference`` (n x d float32/float64,
    returned as float32) and ``query_ids``, ``reference_ids`` (ASCII; bytes or str)."""
    import h5py

    file_size = check_file(path, max_bytes)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise SubmissionError(path, "not an HDF5 file") from None
    out: dict[str, np.ndarray] = {}
    with f:
        dims = {}
        for name in ("query", "reference"):
            ds = _dataset(path, f, name)
            if ds.dtype.kind != "f" or ds.dtype.itemsize not in (4, 8):
                raise SubmissionError(path, f"dtype {ds.dtype}, expected float32 or float64", where=name)
            if len(ds.shape) != 2:
                raise SubmissionError(path, f"shape {ds.shape}, expected 2-D (n, d)", where=name)
            n, d = ds.shape
            if d > max_dim:
                raise SubmissionError(path, f"dimension {d} is over the limit of {max_dim}", where=name)
            if d == 0:
                raise SubmissionError(path, "dimension 0", where=name)
            if n > max_vectors:
                raise SubmissionError(path, f"{n:,} vectors, over the limit of {max_vectors:,}", where=name)
            _check_storage(path, ds, name, ds.dtype.itemsize)
            dims[name] = d
        if dims["query"] != dims["reference"]:
            raise SubmissionError(
                path, f"query dimension {dims['query']} differs from reference dimension {dims['reference']}"
            )
        for name in ("query", "reference"):
            x = _read_float32(f[name])
            row = _finite_rows(x)
            if row is not None:
                raise SubmissionError(path, "NaN or inf (or out of float32 range)", where=f"{name}[{row}]")
            out[name] = x
        for name, vec in (("query_ids", "query"), ("reference_ids", "reference")):
            ds = _dataset(path, f, name)
            if len(ds.shape) != 1:
                raise SubmissionError(path, f"shape {ds.shape}, expected 1-D", where=name)
            if ds.shape[0] != len(out[vec]):
                raise SubmissionError(path, f"{ds.shape[0]} ids for {len(out[vec])} {vec} vectors", where=name)
            if ds.dtype.kind not in "SOU":
                raise SubmissionError(path, f"ids must be strings, got dtype {ds.dtype}", where=name)
            out[name] = _ascii_ids(path, name, _read_ids(path, ds, name, file_size))
    return out


# ------------------------------------------------------------------------------------------------ NPY


def read_rankings_npy(
    path: str | os.PathLike[str], *, n_queries: int, max_bytes: int = MAX_NPY_BYTES
) -> np.ndarray:
    """Read rankings of shape ``(K, n_queries)``: column q lists database ids best first.

    Integer dtype only, no pickles, no id twice in a column. ``-1`` is "no result" (faiss pads with
    it): it may repeat and scores as a negative at its rank, as in revisitop's ``compute_map``; any
    other negative id is an error. Returns int64.
    """
    file_size = check_file(path, max_bytes)
    with open(path, "rb") as fh:
        head = fh.read(6)
        if head[:2] == b"PK":
            raise SubmissionError(path, "is an .npz archive, expected a single .npy array")
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = read_header[version](fh)
        except ValueError as exc:
            raise SubmissionError(path, f"not a valid .npy file ({exc})") from None
        _check_npy_size(path, shape, dtype, file_size - fh.tell())
    if dtype.hasobject:
        raise SubmissionError(path, "object arrays are not accepted (they would need unpickling)")
    if dtype.kind not in "iu":
        raise SubmissionError(path, f"dtype {dtype}, expected an integer dtype")
    if len(shape) != 2:
        raise SubmissionError(path, f"shape {shape}, expected 2-D (K, {n_queries})")
    if shape[1] != n_queries:
        hint = " (looks transposed: expected (K, n_queries))" if shape[0] == n_queries else ""
        raise SubmissionError(path, f"shape {shape} does not match {n_queries} queries{hint}")
    try:
        ranks = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SubmissionError(path, f"cannot read array ({exc})") from None
    if ranks.dtype.kind == "u" and ranks.size and ranks.max() > np.iinfo(np.int64).max:
        raise SubmissionError(path, "ids over the int64 range")
    ranks = ranks.astype(np.int64, copy=False)
    if not ranks.size:
        return ranks
    lo = int(ranks.min())
    if lo < -1:
        k, q = np.argwhere(ranks < -1)[0]
        raise SubmissionError(path, f"negative id {ranks[k, q]} (only -1, no result, is allowed)", where=f"column {q}, row {k}")
    col = _first_duplicate_column(ranks, lo, int(ranks.max()))
    if col is not None:
        q, k, v = col
        raise SubmissionError(path, f"id {v} appears more than once in the ranking", where=f"column {q}, row {k}")
    return ranks


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


#: Scratch for one group of columns copied out contiguously (8 columns of R1M rankings; 2x more
#: saves little and costs more in first-touch page faults).
_COLUMN_BLOCK_BYTES = 64 * MB


def first_duplicate_column(ranks: np.ndarray) -> tuple[int, int, int] | None:
    """(column, row, id) of the first id repeated within a column of (K, nq) integer ``ranks``, or None.

    "First": the lowest column holding a repeat; in it, the lowest row whose id occurs above it.
    """
    if not ranks.size:
        return None
    return _first_duplicate_column(ranks, int(ranks.min()), int(ranks.max()))


def _first_duplicate_column(ranks: np.ndarray, lo: int, hi: int) -> tuple[int, int, int] | None:
    """:func:`first_duplicate_column`, given the smallest and largest id.

    Ids usually span about the database size, so a column is checked in linear time by marking its
    ids in a flag array of that span (1 MB at R1M size, so it stays in cache) and counting the
    flags. Columns of a C-ordered array are strided (each id on its own cache line), so groups of
    columns are first copied out contiguously in cache-sized row blocks. Ids spanning far more than
    K fall back to a sort per column.
    """
    k, nq = ranks.shape
    if k < 2:
        return None
    span = hi - lo + 1
    mark = np.zeros(span, dtype=bool) if span <= max(4 * k, 1 << 22) else None
    group = max(1, min(nq, _COLUMN_BLOCK_BYTES // (k * ranks.itemsize)))
    scratch = None if ranks.flags.f_contiguous else np.empty((group, k), dtype=ranks.dtype)
    for start in range(0, nq, group):
        for j, col in enumerate(_columns(ranks, start, min(start + group, nq), scratch)):
            pads = int(np.count_nonzero(col == -1)) if lo == -1 else 0  # -1 (no result) may repeat
            if mark is not None:
                mark.fill(False)
                mark[col - lo if lo else col] = True
                if np.count_nonzero(mark) == k - max(pads - 1, 0):
                    continue
            else:
                srt = np.sort(col)
                if not (srt[1:] == srt[:-1])[srt[1:] != -1].any():
                    continue
            unique_pads = np.where(col == -1, lo - 1 - np.arange(k), col) if pads else col  # pads never match
            _, row = _first_duplicate(unique_pads)  # type: ignore[misc]  # a repeat exists
            return start + j, row, int(col[row])
    return None


def _columns(
    a: np.ndarray, start: int, stop: int, scratch: np.ndarray | None = None, block_rows: int = 16384
) -> np.ndarray:
    """Columns ``start:stop`` of 2-D ``a`` as rows of a C-contiguous array: a view if ``a`` is
    F-ordered, else a copy into ``scratch`` (reused: first touching fresh pages costs as much as
    the copy)."""
    if a.flags.f_contiguous:
        return a[:, start:stop].T
    out = (np.empty((stop - start, a.shape[0]), dtype=a.dtype) if scratch is None else scratch)[: stop - start]
    for r in range(0, a.shape[0], block_rows):  # blocks: each source cache line is read once
        out[:, r : r + block_rows] = a[r : r + block_rows, start:stop].T
    return out


# ------------------------------------------------------------------------------------------ revisitop


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def read_revisitop_gnd(path: str | os.PathLike[str], *, max_bytes: int = MAX_GND_BYTES) -> dict[str, Any]:
    """Read a revisitop ground truth (``gnd_*.pkl`` through a plain-data unpickler, or its ``.json`` form).

    Returns ``{"imlist": [str], "qimlist": [str], "gnd": [{"easy", "hard", "junk": [int], "bbx": [4 floats]}]}``.
    """
    check_file(path, max_bytes)
    if str(path).lower().endswith(".json"):
        try:
            data = json.loads(_decode(path, Path(path).read_bytes()), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise SubmissionError(path, f"invalid JSON: {exc}") from None
    else:
        from harness.safe_pickle import loads_plain  # the size was checked above: no second stat

        data = loads_plain(Path(path).read_bytes(), source=str(path))
    return validate_revisitop_gnd(data, path)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finite_number(v: Any) -> bool:
    """A bool-free int or float that is finite as a float (a 1,000-digit int is not: no OverflowError)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def validate_revisitop_gnd(data: Any, path: Any = "<gnd>") -> dict[str, Any]:
    """Check the revisitop ground-truth structure; return a normalized plain copy."""
    if not isinstance(data, dict):
        raise SubmissionError(path, f"expected a dict with imlist, qimlist, gnd; got {type(data).__name__}")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in data:
            raise SubmissionError(path, f"missing key {key!r}")
        if not isinstance(data[key], (list, tuple)):
            raise SubmissionError(path, f"expected a list, got {type(data[key]).__name__}", where=key)
    for key in ("imlist", "qimlist"):
        for i, name in enumerate(data[key]):
            if not isinstance(name, str):
                raise SubmissionError(path, f"expected an image name, got {type(name).__name__}", where=f"{key}[{i}]")
    n_db = len(data["imlist"])
    if len(data["gnd"]) != len(data["qimlist"]):
        raise SubmissionError(path, f"{len(data['gnd'])} gnd entries for {len(data['qimlist'])} queries", where="gnd")
    gnd = []
    for i, g in enumerate(data["gnd"]):
        where = f"gnd[{i}]"
        if not isinstance(g, dict):
            raise SubmissionError(path, f"expected a dict, got {type(g).__name__}", where=where)
        entry: dict[str, Any] = {}
        for key in ("easy", "hard", "junk"):
            ids = g.get(key)
            if not isinstance(ids, (list, tuple)):
                raise SubmissionError(path, "missing or not a list", where=f"{where}.{key}")
            for j, v in enumerate(ids):
                if not _is_int(v) or not 0 <= v < n_db:
                    raise SubmissionError(path, f"{short_repr(v)} is not an index into imlist (0..{n_db - 1})",
                                          where=f"{where}.{key}[{j}]")
            if len(set(ids)) != len(ids):
                raise SubmissionError(path, "an index is listed twice", where=f"{where}.{key}")
            entry[key] = [int(v) for v in ids]
        bbx = g.get("bbx")
        if (
            not isinstance(bbx, (list, tuple))
            or len(bbx) != 4
            or not all(_finite_number(v) for v in bbx)
        ):
            raise SubmissionError(path, "expected 4 finite numbers [x1, y1, x2, y2]", where=f"{where}.bbx")
        entry["bbx"] = [float(v) for v in bbx]
        gnd.append(entry)
    return {"imlist": list(data["imlist"]), "qimlist": list(data["qimlist"]), "gnd": gnd}


def write_revisitop_gnd_json(gnd: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a (validated) revisitop ground truth as JSON, the pickle-free form of the same content."""
    from harness.cache import atomic_write_bytes  # lazy: only this writer needs the cache module

    data = validate_revisitop_gnd(gnd)
    atomic_write_bytes(Path(path), json.dumps(data, allow_nan=False).encode("utf-8"))
