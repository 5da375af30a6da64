"""Revisited Oxford/Paris files read as untrusted input: rankings (.npy) and the ground truth (the
restricted pickle or its JSON form), with the generic safe readers of harness.submissions."""

from __future__ import annotations
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence
import numpy as np
from harness.errors import SubmissionError, shown
from harness.messages import short_repr
from harness.submissions import MAX_GND_BYTES, MAX_NPY_BYTES, MB, _check_npy_size, _decode, _first_duplicate, check_file


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


#: Scratch for one group of columns copied out contiguously (8 columns of R1M rankings; 2x more
#: saves little and costs more in first-touch page faults).
_COLUMN_BLOCK_BYTES = 64 * MB
