"""DISC21 submission and ground-truth files read as untrusted input: the matching-track CSV, the
ground-truth CSV and the descriptor-track HDF5 (with the generic safe readers of harness.submissions)."""

from __future__ import annotations
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence
import numpy as np
from harness.errors import SubmissionError, shown
from harness.messages import short_repr
from harness.submissions import MAX_CSV_BYTES, MAX_H5_BYTES, MAX_VECTORS, _ascii_ids, _check_storage, _codes, _dataset, _duplicate_rows, _finite_rows, _id, _no_empty, _read_float32, _read_ids, _read_table, check_file


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
