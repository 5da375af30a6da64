"""The raw output of watermark detection: one row per (image, grid cell, marked or not).

Every detection metric is a function of this one table, so the analytic-threshold TPR, the empirical
ROC and the bit accuracies all come from the same run. The table is columnar (numpy arrays):

==========  =================  ======================================================================
column      dtype              meaning
==========  =================  ======================================================================
image_id    str                the dataset's id of the original image
cell        str                the grid cell's label (the attack and its parameters)
marked      bool               True: the marked image went through the attack; False: the original did
score       float64            the method's raw score, higher = more likely marked (never NaN)
p_value     float64            the method's p-value under "not marked"; NaN when it has none
bits        uint8 (n, k)       decoded bits, or None for zero-bit methods
message     uint8 (n, k)       the bits the image's key embeds (same for both rows of an image), or None
==========  =================  ======================================================================

Files a user can open: :meth:`Detections.save_csv` writes one row per detection with the header
``image_id,cell,marked,score,p_value[,bits,message]``: ``marked`` is ``1``/``0``, floats are written
with the shortest repr that reads back to the same double, an empty ``p_value`` means none, and bit
strings are ``0``/``1`` characters (``bits[0]`` first). :meth:`Detections.save_npz` writes the same
arrays, readable with ``numpy.load(path, allow_pickle=False)``. Both loaders treat the file as
untrusted (size cap, one-line errors naming the line or array).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.errors import SubmissionError

#: Upper bound for a detections file (a 1M-row table with 64-bit strings is about 200 MB).
MAX_FILE_BYTES = 1024 * 1024 * 1024
REQUIRED_COLUMNS = ("image_id", "cell", "marked", "score", "p_value")
BIT_COLUMNS = ("bits", "message")


@dataclass(frozen=True)
class Detection:
    """What a watermarker's ``detect(image, key)`` returns for one image.

    ``score``: higher = more likely marked. ``bits``: decoded message bits (uint8 0/1) for multi-bit
    methods. ``p_value``: the probability, for an unmarked image, of a score at least as high (None when
    the method has no such model)."""

    score: float
    bits: np.ndarray | None = None
    p_value: float | None = None


@dataclass
class Detections:
    """Columnar detection table (see the module docstring for the columns)."""

    image_id: np.ndarray
    cell: np.ndarray
    marked: np.ndarray
    score: np.ndarray
    p_value: np.ndarray
    bits: np.ndarray | None = None
    message: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_id = _str_array(self.image_id, "image_id")
        n = len(self.image_id)
        self.cell = _str_array(self.cell, "cell")
        self.marked = np.asarray(self.marked)
        if self.marked.dtype != np.bool_:
            if self.marked.size and not np.isin(self.marked, (0, 1)).all():
                raise ValueError("marked must be boolean (or 0/1)")
            self.marked = self.marked.astype(bool)
        self.score = np.asarray(self.score, dtype=np.float64)
        self.p_value = np.asarray(self.p_value, dtype=np.float64)
        for name in ("cell", "marked", "score", "p_value"):
            a = getattr(self, name)
            if a.shape != (n,):
                raise ValueError(f"{name} has shape {a.shape}, expected ({n},) like image_id")
        if np.isnan(self.score).any():
            raise ValueError(f"score is NaN in row {int(np.flatnonzero(np.isnan(self.score))[0])}")
        finite_p = self.p_value[~np.isnan(self.p_value)]
        if ((finite_p < 0) | (finite_p > 1)).any():
            raise ValueError("p_value outside [0, 1]")
        self.bits = _bit_matrix(self.bits, n, "bits")
        self.message = _bit_matrix(self.message, n, "message")
        if self.bits is not None and self.message is not None and self.bits.shape != self.message.shape:
            raise ValueError(f"bits {self.bits.shape} and message {self.message.shape} differ in shape")
        if n > 1:
            keys = np.rec.fromarrays([self.cell, self.image_id, self.marked], names="cell,image,marked")
            uniq, counts = np.unique(keys, return_counts=True)
            if (counts > 1).any():
                c, i, m = uniq[counts > 1][0].tolist()
                raise ValueError(f"duplicate row: image {i!r}, cell {c!r}, marked {bool(m)}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        image_ids: Sequence[str],
        cell: str | Sequence[str],
        marked: bool | Sequence[bool],
        detections: Sequence[Detection],
        messages: Sequence[np.ndarray | None] | np.ndarray | None = None,
    ) -> "Detections":
        """A table from per-image :class:`Detection` objects (``cell``/``marked`` broadcast)."""
        n = len(image_ids)
        if len(detections) != n:
            raise ValueError(f"{len(detections)} detections for {n} images")
        cells = np.full(n, cell, dtype=object).astype(str) if isinstance(cell, str) else np.asarray(cell, dtype=str)
        marks = np.full(n, bool(marked)) if isinstance(marked, (bool, np.bool_)) else np.asarray(marked, dtype=bool)
        score = np.array([float(d.score) for d in detections], dtype=np.float64)
        p = np.array([np.nan if d.p_value is None else float(d.p_value) for d in detections], dtype=np.float64)
        has_bits = [d.bits is not None for d in detections]
        if any(has_bits) and not all(has_bits):
            raise ValueError("some detections have bits and others not")
        bits = np.stack([np.asarray(d.bits, dtype=np.uint8).ravel() for d in detections]) if n and all(has_bits) else None
        msg = None
        if messages is not None and not (len(messages) and messages[0] is None):
            msg = np.stack([np.asarray(m, dtype=np.uint8).ravel() for m in messages]) if n else None
        return cls(np.asarray(image_ids, dtype=str), cells, marks, score, p, bits, msg)

    @classmethod
    def concat(cls, tables: Iterable["Detections"]) -> "Detections":
        tables = list(tables)
        if not tables:
            return cls.empty()
        for name in ("bits", "message"):
            present = {getattr(t, name) is not None for t in tables if len(t)}
            if len(present) > 1:
                raise ValueError(f"cannot concatenate tables with and without {name}")
        nonempty = [t for t in tables if len(t)] or tables[:1]

        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(t, name) for t in nonempty]
            return None if parts[0] is None else np.concatenate(parts)

        return cls(*(cat(n) for n in ("image_id", "cell", "marked", "score", "p_value", "bits", "message")))

    @classmethod
    def empty(cls) -> "Detections":
        z = np.zeros(0)
        return cls(np.zeros(0, dtype=str), np.zeros(0, dtype=str), np.zeros(0, dtype=bool), z, z)

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_id)

    def cells(self) -> list[str]:
        """Cell labels in order of first appearance."""
        _, first = np.unique(self.cell, return_index=True)
        return [str(self.cell[i]) for i in np.sort(first)]

    def take(self, rows: np.ndarray) -> "Detections":
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Detections(*(pick(getattr(self, n)) for n in ("image_id", "cell", "marked", "score", "p_value", "bits", "message")))

    def select(self, cell: str) -> "Detections":
        return self.take(np.flatnonzero(self.cell == cell))

    def by_cell(self) -> list[tuple[str, "Detections"]]:
        return [(c, self.select(c)) for c in self.cells()]

    @property
    def has_p_values(self) -> bool:
        return bool(len(self)) and not np.isnan(self.p_value).all()

    def equals(self, other: "Detections") -> bool:
        """Same rows in the same order, bit for bit (NaN p-values compare equal)."""
        if len(self) != len(other):
            return False
        same = lambda a, b: (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))  # noqa: E731
        return (
            np.array_equal(self.image_id, other.image_id)
            and np.array_equal(self.cell, other.cell)
            and np.array_equal(self.marked, other.marked)
            and np.array_equal(self.score.view(np.int64), other.score.view(np.int64))
            and np.array_equal(np.isnan(self.p_value), np.isnan(other.p_value))
            and np.array_equal(np.nan_to_num(self.p_value, nan=-1.0), np.nan_to_num(other.p_value, nan=-1.0))
            and same(self.bits, other.bits)
            and same(self.message, other.message)
        )

    # -- files ----------------------------------------------------------------------------------
    def save_csv(self, path: str | os.PathLike[str]) -> None:
        from harness.cache import atomic_write_bytes

        buf = io.StringIO()
        w = csv.writer(buf)  # RFC 4180 CRLF rows: a lone \r inside a field is then quoted
        extra = [c for c in BIT_COLUMNS if getattr(self, c) is not None]
        w.writerow([*REQUIRED_COLUMNS, *extra])
        bit_text = {c: _bit_strings(getattr(self, c)) for c in extra}
        for i in range(len(self)):
            p = self.p_value[i]
            row = [self.image_id[i], self.cell[i], "1" if self.marked[i] else "0", repr(float(self.score[i])),
                   "" if np.isnan(p) else repr(float(p))]
            w.writerow(row + [bit_text[c][i] for c in extra])
        atomic_write_bytes(Path(path), buf.getvalue().encode("utf-8"))

    @classmethod
    def load_csv(cls, path: str | os.PathLike[str]) -> "Detections":
        from harness.submissions import check_file

        check_file(path, MAX_FILE_BYTES)
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SubmissionError(path, "not valid UTF-8 text") from None
        reader = csv.reader(io.StringIO(text), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise SubmissionError(path, f"malformed CSV: {exc}", where="line 1") from None
        if header is None:
            raise SubmissionError(path, "empty file (expected a header " + ",".join(REQUIRED_COLUMNS) + ")")
        header = [h.strip() for h in header]
        if tuple(header[:5]) != REQUIRED_COLUMNS or any(h not in BIT_COLUMNS for h in header[5:]) or len(set(header)) != len(header):
            raise SubmissionError(path, f"header is {','.join(header)!r}, expected {','.join(REQUIRED_COLUMNS)}[,bits][,message]", where="line 1")
        cols: list[list[str]] = [[] for _ in header]
        lines: list[int] = []
        try:
            for row in reader:
                if not row or all(not f.strip() for f in row):
                    continue
                if len(row) != len(header):
                    raise SubmissionError(path, f"{len(row)} fields, expected {len(header)}", where=f"line {reader.line_num}")
                lines.append(reader.line_num)
                for c, v in zip(cols, row):
                    c.append(v)
        except csv.Error as exc:
            raise SubmissionError(path, f"malformed CSV: {exc}", where=f"line {reader.line_num}") from None
        data = dict(zip(header, cols))
        marked = _parse_marked(path, data["marked"], lines)
        score = _parse_floats(path, data["score"], lines, "score", allow_empty=False)
        p_value = _parse_floats(path, data["p_value"], lines, "p_value", allow_empty=True)
        bad = np.flatnonzero((p_value < 0) | (p_value > 1))
        if len(bad):
            raise SubmissionError(path, f"p_value {data['p_value'][bad[0]]!r} is outside [0, 1]", where=f"line {lines[bad[0]]}")
        bits = {c: _parse_bits(path, data[c], lines, c) if c in data else None for c in BIT_COLUMNS}
        try:
            return cls(np.array(data["image_id"], dtype=str), np.array(data["cell"], dtype=str), marked, score, p_value,
                       bits["bits"], bits["message"])
        except ValueError as exc:
            raise SubmissionError(path, str(exc)) from None

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        from harness.cache import atomic_write_bytes

        arrays: dict[str, Any] = {n: getattr(self, n) for n in ("image_id", "cell", "marked", "score", "p_value")}
        arrays.update({c: getattr(self, c) for c in BIT_COLUMNS if getattr(self, c) is not None})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> "Detections":
        from harness.submissions import check_file

        check_file(path, MAX_FILE_BYTES)
        try:
            with np.load(path, allow_pickle=False) as z:
                names = set(z.files)
                missing = [n for n in REQUIRED_COLUMNS if n not in names]
                unknown = sorted(names - set(REQUIRED_COLUMNS) - set(BIT_COLUMNS))
                if missing or unknown:
                    raise SubmissionError(path, f"arrays {sorted(names)}: missing {missing}, unknown {unknown}")
                arrays = {n: z[n] for n in names}
        except SubmissionError:
            raise
        except (OSError, ValueError) as exc:  # not a zip, or object arrays refused without pickle
            raise SubmissionError(path, f"not a readable .npz file ({exc})") from None
        for n in ("image_id", "cell"):
            if arrays[n].dtype.kind != "U":
                raise SubmissionError(path, f"array {n!r} has dtype {arrays[n].dtype}, expected str")
        for n in ("score", "p_value"):
            if arrays[n].dtype.kind not in "fiu":
                raise SubmissionError(path, f"array {n!r} has dtype {arrays[n].dtype}, expected float")
        try:
            return cls(**{n: arrays.get(n) for n in (*REQUIRED_COLUMNS, *BIT_COLUMNS)})
        except ValueError as exc:
            raise SubmissionError(path, str(exc)) from None


# ------------------------------------------------------------------------------------------ helpers


def _str_array(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype.kind != "U":
        if a.size and a.dtype.kind not in "OS":
            raise ValueError(f"{name} must hold strings, got dtype {a.dtype}")
        a = a.astype(str)
    return a


def _bit_matrix(a: Any, n: int, name: str) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name} has shape {a.shape}, expected ({n}, k)")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 values")
    return a.astype(np.uint8)


def _bit_strings(a: np.ndarray) -> list[str]:
    if not a.size:
        return [""] * len(a)
    chars = (a.astype(np.uint8) + ord("0")).view("S1")
    return [b"".join(row).decode("ascii") for row in chars]


def _parse_marked(path: Any, values: list[str], lines: list[int]) -> np.ndarray:
    table = {"1": True, "0": False, "true": True, "false": False}
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        got = table.get(v.strip().lower())
        if got is None:
            raise SubmissionError(path, f"marked {v!r} is not 1/0/true/false", where=f"line {lines[i]}")
        out[i] = got
    return out


def _parse_floats(path: Any, values: list[str], lines: list[int], name: str, *, allow_empty: bool) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        v = v.strip()
        if not v and allow_empty:
            out[i] = np.nan
            continue
        try:
            x = float(v)
        except ValueError:
            x = None
        if x is None or np.isnan(x):
            what = "empty" if not v else f"{v!r} is not a number"
            raise SubmissionError(path, f"{name} {what}", where=f"line {lines[i]}")
        out[i] = x
    return out


def _parse_bits(path: Any, values: list[str], lines: list[int], name: str) -> np.ndarray:
    k = len(values[0].strip()) if values else 0
    out = np.zeros((len(values), k), dtype=np.uint8)
    for i, v in enumerate(values):
        v = v.strip()
        if len(v) != k or v.strip("01"):
            raise SubmissionError(path, f"{name} {v!r} is not a string of {k} 0/1 characters", where=f"line {lines[i]}")
        out[i] = np.frombuffer(v.encode("ascii"), dtype=np.uint8) - ord("0")
    return out
