"""Readers for SIMAT's official files, which are untrusted input: size caps, strict columns, and
one-line errors naming the file and line (harness.errors.SubmissionError).

- ``triplets.csv``: ``region_id,subj,rel,obj,dataset_id`` (dataset_id: a permutation of 0..n-1, the
  row of the image in the OSCAR matrix and in the database).
- ``transfos.csv``: an unnamed index column, then ``transfo_id,region_id,field,value,target,norm,
  query_ids,target_ids,dataset_id,norm2,is_test`` in the release; we need ``region_id, field, value,
  target, target_ids, norm2, is_test`` and take the query id from ``transfo_id`` (else the index
  column, else the line). Its ``dataset_id`` column is stale (it agrees with triplets.csv on about a
  quarter of the rows) and is never read.
- ``captions.txt``: one caption per line; caption id = 0-based line number.
- the OSCAR matrix ``oracle[dataset_id, caption_id]``: ``.npy`` (no pickles) or ``.safetensors``
  holding one 2-D tensor.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import SubmissionError
from harness.submissions import check_file, read_text_file

MB = 1024 * 1024
#: The release: triplets.csv 0.2 MB, transfos.csv 1 MB, captions.txt 17 kB, OSCAR matrix 15 MB.
MAX_CSV_BYTES = 256 * MB
MAX_CAPTIONS_BYTES = 64 * MB
MAX_ORACLE_BYTES = 2048 * MB
FIELDS = ("subj", "rel", "obj")
_BOOL = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class Triplets:
    region_id: np.ndarray  # (n,) int64, row order of the file
    dataset_id: np.ndarray  # (n,) int64
    words: dict[str, tuple[str, ...]]  # field -> per row

    def region_to_row(self) -> dict[int, int]:
        """region_id -> dataset_id."""
        return dict(zip(self.region_id.tolist(), self.dataset_id.tolist()))


@dataclass(frozen=True)
class Transfos:
    ids: tuple[str, ...]
    region_id: np.ndarray  # int64
    field: tuple[str, ...]
    value: tuple[str, ...]
    target: tuple[str, ...]
    target_caption: np.ndarray  # int64
    norm2: np.ndarray  # float64
    is_test: np.ndarray  # bool
    lines: np.ndarray  # 1-based file line of each row (for errors)


def _rows(path: Path, max_bytes: int) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped) and (line, fields) of every non-blank data row."""
    text = read_text_file(path, max_bytes=max_bytes)
    reader = csv.reader(io.StringIO(text), strict=True)
    out: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    line = 1
    try:
        for row in reader:
            if any(f.strip() for f in row):
                if header is None:
                    header = [f.strip() for f in row]
                else:
                    out.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise SubmissionError(path, f"malformed CSV: {exc}", where=f"line {reader.line_num}") from None
    if header is None:
        raise SubmissionError(path, "empty file, expected a header line")
    return header, out


def _columns(path: Path, header: list[str], rows: list[tuple[int, list[str]]], need: tuple[str, ...]) -> dict[str, int]:
    missing = [c for c in need if c not in header]
    if missing:
        raise SubmissionError(path, f"missing column(s) {', '.join(missing)} (header: {','.join(header)})",
                              where="line 1")
    dup = [c for c in need if header.count(c) > 1]
    if dup:
        raise SubmissionError(path, f"column {dup[0]!r} appears twice in the header", where="line 1")
    for line, row in rows:
        if len(row) != len(header):
            raise SubmissionError(path, f"{len(row)} fields, the header has {len(header)}", where=f"line {line}")
    return {c: header.index(c) for c in header if c}


def _int(path: Path, line: int, name: str, raw: str) -> int:
    s = raw.strip()
    try:
        return int(s)
    except ValueError:
        try:  # pandas writes integral floats as "12.0" when a column once held NaN
            f = float(s)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f == int(f):
            return int(f)
        raise SubmissionError(path, f"{name} {raw!r} is not an integer", where=f"line {line}") from None


def _text(path: Path, line: int, name: str, raw: str) -> str:
    s = raw.strip()
    if not s:
        raise SubmissionError(path, f"empty {name}", where=f"line {line}")
    return s


def read_triplets(path: Path, max_rows: int = 1_000_000) -> Triplets:
    header, rows = _rows(path, MAX_CSV_BYTES)
    col = _columns(path, header, rows, ("region_id", "subj", "rel", "obj", "dataset_id"))
    if not rows:
        raise SubmissionError(path, "no triplets")
    if len(rows) > max_rows:
        raise SubmissionError(path, f"{len(rows):,} rows, over the limit of {max_rows:,}")
    region = np.array([_int(path, ln, "region_id", r[col["region_id"]]) for ln, r in rows], dtype=np.int64)
    did = np.array([_int(path, ln, "dataset_id", r[col["dataset_id"]]) for ln, r in rows], dtype=np.int64)
    words = {f: tuple(_text(path, ln, f, r[col[f]]) for ln, r in rows) for f in FIELDS}
    lines = [ln for ln, _ in rows]
    for name, values in (("region_id", region), ("dataset_id", did)):
        seen: dict[int, int] = {}
        for ln, v in zip(lines, values.tolist()):
            if v in seen:
                raise SubmissionError(path, f"{name} {v} appears twice (also on line {seen[v]})", where=f"line {ln}")
            seen[v] = ln
    bad = np.flatnonzero((did < 0) | (did >= len(did)))
    if len(bad):
        i = int(bad[0])
        raise SubmissionError(path, f"dataset_id {did[i]} is outside 0..{len(did) - 1} (dataset_ids must number "
                              "the images 0..n-1: they index the OSCAR matrix)", where=f"line {lines[i]}")
    return Triplets(region, did, words)


def read_transfos(path: Path, max_rows: int = 5_000_000) -> Transfos:
    header, rows = _rows(path, MAX_CSV_BYTES)
    need = ("region_id", "field", "value", "target", "target_ids", "norm2", "is_test")
    col = _columns(path, header, rows, need)
    if len(rows) > max_rows:
        raise SubmissionError(path, f"{len(rows):,} rows, over the limit of {max_rows:,}")
    if "transfo_id" in col:
        id_col: int | None = col["transfo_id"]
    else:
        id_col = 0 if header[0] == "" else None  # pandas' unnamed index column
    ids, field, value, target, cap, norm2, is_test, lines, region = [], [], [], [], [], [], [], [], []
    seen: dict[str, int] = {}
    for ln, r in rows:
        qid = r[id_col].strip() if id_col is not None else str(ln)
        if not qid:
            raise SubmissionError(path, "empty query id (transfo_id)", where=f"line {ln}")
        if qid in seen:
            raise SubmissionError(path, f"query id {qid} appears twice (also on line {seen[qid]})", where=f"line {ln}")
        seen[qid] = ln
        f = r[col["field"]].strip()
        if f not in FIELDS:
            raise SubmissionError(path, f"field {f!r} is not one of {', '.join(FIELDS)}", where=f"line {ln}")
        c = _int(path, ln, "target_ids", r[col["target_ids"]])
        if c < 0:
            raise SubmissionError(path, f"target_ids {c} is negative", where=f"line {ln}")
        raw = r[col["norm2"]].strip()
        try:
            n2 = float(raw)
        except ValueError:
            n2 = math.nan
        if not (math.isfinite(n2) and n2 > 0):
            raise SubmissionError(path, f"norm2 {raw!r} is not a positive number", where=f"line {ln}")
        t = _BOOL.get(r[col["is_test"]].strip().lower())
        if t is None:
            raise SubmissionError(path, f"is_test {r[col['is_test']]!r} is not True or False", where=f"line {ln}")
        ids.append(qid)
        field.append(f)
        value.append(_text(path, ln, "value", r[col["value"]]))
        target.append(_text(path, ln, "target", r[col["target"]]))
        region.append(_int(path, ln, "region_id", r[col["region_id"]]))
        cap.append(c)
        norm2.append(n2)
        is_test.append(t)
        lines.append(ln)
    return Transfos(
        ids=tuple(ids), region_id=np.array(region, dtype=np.int64), field=tuple(field), value=tuple(value),
        target=tuple(target), target_caption=np.array(cap, dtype=np.int64), norm2=np.array(norm2, dtype=np.float64),
        is_test=np.array(is_test, dtype=bool), lines=np.array(lines, dtype=np.int64),
    )


def read_captions(path: Path) -> tuple[str, ...]:
    """Captions by 0-based line number (a final newline does not add an empty caption)."""
    text = read_text_file(path, max_bytes=MAX_CAPTIONS_BYTES)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    captions = tuple(ln.rstrip("\r") for ln in lines)
    if not captions:
        raise SubmissionError(path, "no captions")
    return captions


def read_oracle(path: Path) -> np.ndarray:
    """The OSCAR matrix as float32 (n_images, n_captions), from .npy or .safetensors; finite values only."""
    check_file(path, MAX_ORACLE_BYTES)
    name = path.name.lower()
    if name.endswith(".npy"):
        x = _read_npy(path)
    elif name.endswith(".safetensors"):
        x = _read_safetensors(path)
    else:
        raise SubmissionError(path, "the OSCAR matrix must be a .npy or .safetensors file (convert SIMAT's .pt "
                              "with: python -m harness_plugins.simat.convert_heads IN.pt OUT.safetensors)")
    if x.ndim != 2:
        raise SubmissionError(path, f"shape {x.shape}, expected 2-D (images, captions)")
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise SubmissionError(path, "NaN or inf", where=f"[{i}, {j}]")
    return x


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = readers[version](fh)
        except ValueError as exc:
            raise SubmissionError(path, f"not a valid .npy file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "fiub":
        raise SubmissionError(path, f"dtype {dtype}, expected a numeric array")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SubmissionError(path, f"cannot read array ({exc})") from None


def _read_safetensors(path: Path) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise SubmissionError(path, f"not a readable safetensors file of numeric tensors ({exc})") from None
    if len(tensors) != 1:
        raise SubmissionError(path, f"holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])}), expected one")
    (x,) = tensors.values()
    if x.dtype.kind not in "fiub":
        raise SubmissionError(path, f"dtype {x.dtype}, expected a numeric tensor")
    return x


def file_digest(path: Path) -> str:
    """sha256 of a file (memoised on path, size, mtime)."""
    from harness_plugins.timm.checkpoint import file_sha256

    return file_sha256(os.fspath(path))
