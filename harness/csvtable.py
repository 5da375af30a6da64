"""Fast, bounded reader of the leaderboard's small CSV files (matching submissions, ground truth).

A file becomes a :class:`Table`: its non-blank rows (a blank row is a line of spaces and tabs only),
the file line of each, whether the first row was the header, and per column either stripped ids
(``str`` arrays) or numbers (float64). Two paths give the same tables and the same errors:

- **bytes** (ASCII files without quotes or lone CRs, i.e. every file the tracks' own writers make):
  numpy finds the newlines and commas in blocks of the raw bytes, checks that each line has the
  right number of fields from the comma count alone, and copies each column into a fixed-width
  array (one contiguous copy per field, through a sliding-window view of the bytes). Numbers of the
  plain form ``[+-]ddd.ddd`` with at most 19 digits are parsed exactly without a string conversion
  (:func:`_plain_decimals`); any other number goes to numpy's parser.
- **rows** (quoted fields, non-ASCII text): the ``csv`` module, row by row, skipping blank rows as
  they come.

Bounds, whatever the file declares: memory is the file's bytes plus a small multiple of its data
rows (blocks of 1 MiB at a time; only the non-blank rows are kept, and no more than the row limit +
1); a line may hold
at most :data:`MAX_LINE_BYTES` bytes and an id at most :data:`MAX_ID_CHARS` characters; a column
whose fixed width times its row count would exceed what the file's size justifies (one long id
among millions of short ones) is refused rather than padded. A NUL, a control character (other than
tabs around fields) or DEL anywhere in the file is an error naming its line. Error messages show
untrusted text through :func:`harness.errors.shown`.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Sequence

import numpy as np

from harness.errors import SubmissionError, shown

#: Longest line accepted by the bytes path (the rows path has the csv module's 128 KiB field limit).
MAX_LINE_BYTES = 65536
#: Longest id accepted (DISC21 ids have 6-7 characters; file names rarely pass 100).
MAX_ID_CHARS = 256
#: A fixed-width id column may take this much memory whatever the file, or 8x the file's size.
_ID_COLUMN_FLOOR = 64 * 1024 * 1024
_BLOCK_BYTES = 1 << 20
#: Number fields up to this many bytes are gathered into one matrix; longer ones are parsed one by one.
_NUMBER_WIDTH = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_POW10 = np.array([float(f"1e{k}") for k in range(20)])


class Table:
    """Non-blank rows of a CSV file with a fixed number of columns (header dropped)."""

    def __init__(self, path: object, header: Sequence[str], lines: np.ndarray, has_header: bool, size: int) -> None:
        self.path = path
        self.header = tuple(header)
        self.lines = lines  # int64, 1-based file line of each row
        self.has_header = has_header
        self.size = size  # bytes of the file

    def __len__(self) -> int:
        return len(self.lines)

    def field(self, row: int, col: int) -> str:
        """Raw text of one field, stripped (for error messages)."""
        raise NotImplementedError

    def ids(self, col: int) -> np.ndarray:
        """Column ``col`` as stripped ``str`` ids (tabs inside an id are an error)."""
        raise NotImplementedError

    def numbers(self, col: int) -> tuple[np.ndarray, int | None]:
        """Column ``col`` as float64, and the first row that is not a number (None if all are)."""
        raise NotImplementedError

    def where(self, row: int) -> str:
        return f"line {int(self.lines[row])}"

    def _check_width(self, col: int, lengths: np.ndarray) -> int:
        """Width of the fixed-width column, after refusing over-long ids and skewed columns."""
        if not len(lengths):
            return 0
        longest = int(np.argmax(lengths))
        width = int(lengths[longest])
        name = self.header[col]
        if width > MAX_ID_CHARS:
            raise SubmissionError(
                self.path, f"{name} is {width:,} characters long, over the limit of {MAX_ID_CHARS}", where=self.where(longest)
            )
        need = 4 * width * len(lengths)
        allowed = max(_ID_COLUMN_FLOOR, 8 * self.size)
        if need > allowed:
            raise SubmissionError(
                self.path,
                f"{name} of {width} characters in a file of {len(lengths):,} rows: a column that wide would take "
                f"{need >> 20:,} MB, more than this file's size justifies ({allowed >> 20:,} MB); shorten the ids",
                where=self.where(longest),
            )
        return width

    def _check_controls(self, col: int, ids: np.ndarray, chars: str) -> None:
        """Refuse ids holding any of ``chars`` (tabs, and in quoted fields line breaks)."""
        for ch in chars:
            inner = np.flatnonzero(np.strings.find(ids, ch) >= 0)
            if len(inner):
                i = int(inner[0])
                raise SubmissionError(
                    self.path, f"{self.header[col]} {shown(str(ids[i]))} contains a control character {ch!r}", where=self.where(i)
                )


# ------------------------------------------------------------------------------------------ entry


def read_table(
    path: object, data: bytes, header: Sequence[str], *, max_rows: int | None, what: str
) -> Table:
    """Parse ``data`` (the bytes of ``path``) into a :class:`Table` of ``len(header)`` columns.

    The header row is recognised case-insensitively (fields stripped) and dropped. Raises
    :class:`SubmissionError` naming the line for a wrong number of columns, a control character,
    an over-long line, malformed quoting, and more than ``max_rows`` data rows (``what`` names them).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    size = len(data)
    lone_cr = b"\r" in data and data.count(b"\r") != data.count(b"\r\n")
    ascii_only = not size or int(np.frombuffer(data, np.uint8).max()) < 128
    if ascii_only and b'"' not in data and not lone_cr:
        return _BytesTable.parse(path, data, header, max_rows, what, size)
    return _RowsTable.parse(path, data, header, max_rows, what, size)


def _over_limit(path: object, n: int, max_rows: int | None, what: str) -> None:
    if max_rows is not None and n > max_rows:
        raise SubmissionError(path, f"{n:,} {what}, over the limit of {max_rows:,}")


def _columns_error(path: object, n_fields: int, header: Sequence[str], line: int) -> SubmissionError:
    return SubmissionError(path, f"{n_fields} columns, expected {len(header)} ({','.join(header)})", where=f"line {line}")


def _control_error(path: object, char: str, line: int) -> SubmissionError:
    return SubmissionError(
        path, f"control character {char!r} (U+{ord(char):04X}) in the file; ids and scores must be printable text", where=f"line {line}"
    )


# ------------------------------------------------------------------------------------------ bytes path


class _BytesTable(Table):
    """Fields located by byte offsets into the file's bytes."""

    def __init__(self, path, header, lines, has_header, size, data, starts, ends, has_ws, has_tab) -> None:
        super().__init__(path, header, lines, has_header, size)
        self.data = data
        self.buf = np.frombuffer(data, np.uint8)
        self.starts = starts  # per column: int64 offset of each row's field
        self.ends = ends
        self.has_ws = has_ws
        self.has_tab = has_tab

    @classmethod
    def parse(cls, path, data: bytes, header, max_rows, what, size) -> "_BytesTable":
        ncols = len(header)
        k = ncols - 1
        buf = np.frombuffer(data, np.uint8)
        has_cr, has_tab = b"\r" in data, b"\t" in data
        has_ws = has_tab or b" " in data
        if b"\x7f" in data:
            pos = data.index(b"\x7f")
            raise _control_error(path, "\x7f", data.count(b"\n", 0, pos) + 1)
        line_parts, start_parts, end_parts, comma_parts = [], [], [], []
        kept = 0
        lines_before = 0
        a, n_bytes = 0, len(data)
        while a < n_bytes:
            b = min(a + _BLOCK_BYTES, n_bytes)
            if b < n_bytes:
                cut = data.rfind(b"\n", a, b)
                if cut < 0:  # a line longer than the block: it may still be within the line limit
                    cut = data.find(b"\n", b, a + MAX_LINE_BYTES + 2)
                if cut >= 0:
                    b = cut + 1
                elif n_bytes - a <= MAX_LINE_BYTES + 1:
                    b = n_bytes  # the last line, without a line break
                else:
                    raise SubmissionError(
                        path, f"line over the limit of {MAX_LINE_BYTES:,} bytes", where=f"line {lines_before + 1}"
                    )
            c = buf[a:b]
            nl = np.flatnonzero(c == 10)
            n_ctrl = np.count_nonzero(c < 32)
            if n_ctrl != len(nl) + (np.count_nonzero(c == 13) if has_cr else 0) + (np.count_nonzero(c == 9) if has_tab else 0):
                bad = int(np.flatnonzero((c < 32) & (c != 10) & (c != 13) & (c != 9))[0])
                raise _control_error(path, chr(c[bad]), lines_before + int(np.count_nonzero(nl < bad)) + 1)
            if len(nl) and nl[-1] == len(c) - 1:
                ends = nl
                starts = np.concatenate(([0], nl[:-1] + 1))
            else:  # the file's last line has no line break
                ends = np.append(nl, len(c))
                starts = np.concatenate(([0], nl + 1))
            if has_cr:  # only CRLF here (lone CRs take the rows path): drop the CR before each LF
                ends = ends - ((ends > starts) & (c[np.maximum(ends - 1, 0)] == 13))
            length = ends - starts
            longest = int(np.argmax(length))
            if length[longest] > MAX_LINE_BYTES:
                raise SubmissionError(
                    path, f"line of {int(length[longest]):,} bytes, over the limit of {MAX_LINE_BYTES:,}", where=f"line {lines_before + longest + 1}"
                )
            if has_ws:
                text = (c != 32) & (c != 9) & (c != 13) & (c != 10)
                csum = np.zeros(len(c) + 1, np.int32)
                np.cumsum(text, out=csum[1:])
                keep = csum[ends] != csum[starts]
            else:
                keep = length > 0
            if keep.all():  # no blank line in the block (the usual case): no gathers
                rows, st, en = np.arange(len(starts)), starts, ends
            else:
                rows = np.flatnonzero(keep)
                st, en = starts[rows], ends[rows]
            commas = np.flatnonzero(c == 44)
            # Each non-blank line has exactly k commas iff there are k per line in total and the
            # i-th group of k (in order) starts and ends inside line i (blank lines hold none).
            grouped = commas.reshape(-1, k) if len(commas) == k * len(rows) else None
            if grouped is None or (len(rows) and not ((grouped[:, 0] >= st).all() and (grouped[:, -1] < en).all())):
                per_line = np.diff(np.searchsorted(commas, np.append(st, len(c))))
                bad = int(np.flatnonzero(per_line != k)[0])
                raise _columns_error(path, int(per_line[bad]) + 1, header, lines_before + int(rows[bad]) + 1)
            room = (max_rows + 1 - kept) if max_rows is not None else len(rows)  # + 1: the header, if any
            if room > 0:
                take = slice(0, min(room, len(rows)))
                line_parts.append(rows[take] + (lines_before + 1))
                start_parts.append(st[take] + a)
                end_parts.append(en[take] + a)
                comma_parts.append(grouped[take].T + a)  # (k, rows): one contiguous row per comma
            kept += len(rows)
            lines_before += len(nl)
            a = b
        if line_parts:
            lines = np.concatenate(line_parts)
            st, en, commas = np.concatenate(start_parts), np.concatenate(end_parts), np.concatenate(comma_parts, axis=1)
        else:
            lines = st = en = np.zeros(0, np.int64)
            commas = np.zeros((k, 0), np.int64)
        has_header = bool(len(lines)) and _is_header(data[st[0] : en[0]].decode("ascii").split(","), header)
        _over_limit(path, kept - has_header, max_rows, what)
        if has_header:
            lines, st, en, commas = lines[1:], st[1:], en[1:], commas[:, 1:]
        starts = [st] + [commas[j] + 1 for j in range(k)]
        ends = [commas[j] for j in range(k)] + [en]
        return cls(path, header, lines, has_header, size, data, starts, ends, has_ws, has_tab)

    def field(self, row: int, col: int) -> str:
        return self.data[self.starts[col][row] : self.ends[col][row]].decode("ascii").strip()

    def _gather(self, col: int, width: int, dtype: type, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, width) matrix of the column's bytes, zero-padded: row i is the ``width`` bytes from the
        field's start (one contiguous copy each, through a sliding-window view), cut at its length."""
        st, ln = self.starts[col], self.ends[col] - self.starts[col]
        if rows is not None:
            st, ln = st[rows], ln[rows]
        out = _windows(self.buf, st, width)
        if not (ln == width).all():
            out *= np.arange(width, dtype=np.int64)[None, :] < ln[:, None]
        return out if dtype is np.uint8 else out.astype(dtype)

    def ids(self, col: int) -> np.ndarray:
        width = self._check_width(col, self.ends[col] - self.starts[col])
        if width == 0:
            return np.zeros(len(self), dtype="<U1")
        # UCS-4 code units straight from the ASCII bytes: the matrix *is* the str array's buffer.
        ids = self._gather(col, width, np.uint32).view(f"<U{width}").reshape(-1)
        if self.has_ws:
            ids = np.strings.strip(ids)
        if self.has_tab:
            self._check_controls(col, ids, "\t")
        return ids

    def numbers(self, col: int) -> tuple[np.ndarray, int | None]:
        n = len(self)
        st, ln = self.starts[col], self.ends[col] - self.starts[col]
        values = np.zeros(n)
        if not n:
            return values, None
        short = ln <= _NUMBER_WIDTH
        rows = np.arange(n) if short.all() else np.flatnonzero(short)
        fast, ok = _plain_decimals(self.buf, st[rows], ln[rows])
        values[rows] = fast
        bad = []
        rest = rows[~ok]
        if len(rest):  # other forms (exponents, 20+ digits, inf/nan, spaces): numpy's parser
            width = max(int(ln[rest].max()), 1)
            raw = np.ascontiguousarray(self._gather(col, width, np.uint8, rest)).view(f"S{width}").reshape(-1)
            parsed, first = _parse_each(raw)
            values[rest] = parsed
            if first is not None:
                bad.append(int(rest[first]))
        if len(rows) < n:  # fields over _NUMBER_WIDTH bytes, one by one
            long_rows = np.flatnonzero(~short)
            raw = np.array([self.data[st[i] : st[i] + ln[i]] for i in long_rows.tolist()], dtype=bytes)
            parsed, first = _parse_each(raw)
            values[long_rows] = parsed
            if first is not None:
                bad.append(int(long_rows[first]))
        return values, (min(bad) if bad else None)


def _windows(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """(n, width) copy of ``buf[o : o + width]`` for each offset, zero past the end of ``buf``.

    Up to 8 bytes: one unaligned 8-byte load per field (2-4x faster than copying rows of a
    sliding-window view). No padded copy of the file: the few windows that would run past its end
    are taken from a small zero-padded copy of the tail."""
    n = len(offsets)
    span = 8 if width <= 8 else width
    if not n or not width:
        return np.zeros((n, width), np.uint8)
    last = len(buf) - span  # the last offset whose window fits
    over = np.flatnonzero(offsets > last) if int(offsets.max()) > last else None
    safe = offsets if over is None else np.minimum(offsets, max(last, 0))
    if last < 0:  # a file shorter than one window
        out = np.zeros((n, span), np.uint8)
    elif span == 8:
        words = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
        out = words[safe].view(np.uint8).reshape(-1, 8)
    else:
        out = np.lib.stride_tricks.sliding_window_view(buf, span)[safe]
    if over is not None and len(over):
        start = int(offsets[over].min())
        tail = np.concatenate([buf[start:], np.zeros(span, np.uint8)])
        out[over] = np.lib.stride_tricks.sliding_window_view(tail, span)[offsets[over] - start]
    return out[:, :width]


def _horner(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint64 value of each column of ASCII digits (width, n), most significant row first, and
    whether every character was a digit. Four digits at a time (each group below 10**4, in uint16),
    then one multiply-add per group."""
    k, n = digits.shape
    acc = np.zeros(n, np.uint64)
    if not k:
        return acc, np.ones(n, bool)
    d = digits - np.uint8(48)  # a non-digit wraps above 9
    ok = d.max(axis=0) <= 9
    d = d.astype(np.uint16)
    head = k % 4
    for row in d[:head]:
        acc *= np.uint64(10)
        acc += row
    if k > head:
        g = d[head:].reshape(-1, 4, n)
        groups = ((g[:, 0] * np.uint16(10) + g[:, 1]) * np.uint16(10) + g[:, 2]) * np.uint16(10) + g[:, 3]
        for row in groups:
            acc *= np.uint64(10_000)
            acc += row
    return acc, ok


def _plain_decimals(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the fields ``buf[o : o + length]`` of the form ``[+-]digits[.digits]`` with at
    most 19 digits, and which fields have that form (the others are left to numpy's parser).

    Exact, i.e. equal to ``float(text)``: in a group of fields with the same sign character and the
    same number of integer digits, the fractions padded with '0' to the group's longest (B digits),
    the digits of each field form an integer M < 10**19 and its value is M / 10**B. When M < 2**53
    both are exact doubles and one IEEE division rounds correctly (Clinger's fast path). Otherwise
    the division is done in x87 extended precision (64-bit mantissa: M and 10**B are exact there),
    whose result rounds correctly to a double unless it lies exactly halfway between two doubles:
    those few go to the parser too.

    Works on the transposed bytes (one contiguous row per character position): a group's digits are
    row slices, with no per-field shifting. The largest group is computed over every field (the
    others' results discarded), so the usual one-shape file needs no gather at all.
    """
    n = len(offsets)
    values = np.zeros(n)
    ok = np.zeros(n, bool)
    width = int(lengths.max()) if n else 0
    if not width:
        return values, ok
    chars = np.ascontiguousarray(_windows(buf, offsets, width).T)  # bytes past a field's end too
    length = lengths.astype(np.int8)  # <= _NUMBER_WIDTH: small integers keep every pass cheap
    first = np.full(n, width, np.int8)  # position of the first dot
    for j in range(width - 1, -1, -1):
        np.copyto(first, np.int8(j), where=chars[j] == 46)
    has_dot = first < length
    dot = np.minimum(first, length)
    lead = chars[0]
    signed = (((lead == 45) | (lead == 43)) & (length > 0)).astype(np.int8)
    n_int = dot - signed
    n_frac = np.where(has_dot, length - dot - 1, 0).astype(np.int8)
    total = n_int + n_frac
    group = np.where((total >= 1) & (total <= 19), signed * 20 + n_int, -1).astype(np.int16)
    counts = np.bincount(group + 1, minlength=41)[1:]
    largest = int(np.argmax(counts))
    for key in np.flatnonzero(counts).tolist():
        sign, a = divmod(key, 20)
        member = group == key
        whole = key == largest or counts[key] == n
        sel = slice(None) if whole else np.flatnonzero(member)
        frac_len = n_frac[sel]
        b = int(frac_len[member].max() if whole else frac_len.max())  # <= 19 - a in the group
        int_part = chars[sign : sign + a, sel]
        frac_part = chars[sign + a + 1 : sign + a + 1 + b, sel].copy()
        for j in range(int(frac_len.min()) if len(frac_len) else b, b):  # past a fraction's end: '0'
            frac_part[j][frac_len <= j] = 48
        int_value, good = _horner(int_part)
        frac_value, frac_good = _horner(frac_part)
        good &= frac_good
        mant = int_value * np.uint64(10**b) + frac_value
        v = mant.astype(np.float64) / _POW10[b]
        wide = np.flatnonzero(good & (mant >= np.uint64(1 << 53)) & (member[sel] if whole else True))
        if len(wide):
            if _EXTENDED:
                q = mant[wide].astype(np.longdouble) / _POW10_EXT[b]
                low_bits = q.view(np.uint64).reshape(-1, 2)[:, 0] & np.uint64(0x7FF)
                v[wide] = q.astype(np.float64)
                good[wide[low_bits == np.uint64(0x400)]] = False  # exactly halfway between two doubles
            else:
                good[wide] = False
        if whole:
            values[member] = v[member]
            ok[member] = good[member]
        else:
            values[sel] = v
            ok[sel] = good
    np.negative(values, out=values, where=(signed == 1) & (lead == 45))
    return values, ok


#: x87 extended precision (64-bit mantissa, the layout :func:`_plain_decimals` reads) is available.
_EXTENDED = bool(np.finfo(np.longdouble).nmant == 63 and np.dtype(np.longdouble).itemsize == 16)
_POW10_EXT = np.array([np.longdouble(10) ** k for k in range(20)], dtype=np.longdouble)


def _parse_each(raw: np.ndarray) -> tuple[np.ndarray, int | None]:
    """float64 of each string (numpy's parser: Python ``float`` syntax), and the first that fails."""
    try:
        return raw.astype(np.float64), None
    except ValueError:
        out = np.zeros(len(raw))
        for i, v in enumerate(raw.tolist()):
            try:
                out[i] = np.array([v]).astype(np.float64)[0]
            except ValueError:
                return out, i
        return out, None  # pragma: no cover - astype failed on the whole but on no element


def _is_header(fields: list[str], header: Sequence[str]) -> bool:
    return [f.strip().lower() for f in fields] == list(header)


# ------------------------------------------------------------------------------------------- rows path


class _RowsTable(Table):
    """Fields from the csv module (quoted fields, non-ASCII text)."""

    def __init__(self, path, header, lines, has_header, size, columns: list[list[str]]) -> None:
        super().__init__(path, header, lines, has_header, size)
        self.columns = columns

    @classmethod
    def parse(cls, path, data: bytes, header, max_rows, what, size) -> "_RowsTable":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise SubmissionError(path, "not valid UTF-8 text", where=f"line {line}") from None
        bad = _CONTROL.search(text)
        if bad:
            raise _control_error(path, bad.group(), text.count("\n", 0, bad.start()) + 1)
        ncols = len(header)
        columns: list[list[str]] = [[] for _ in range(ncols)]
        lines: list[int] = []
        cap = max_rows + 1 if max_rows is not None else None  # + 1: the header, if any
        count = 0
        reader = csv.reader(io.StringIO(text), strict=True)
        start = 1
        try:
            for row in reader:
                line, start = start, reader.line_num + 1
                if len(row) != ncols:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # blank line
                    raise _columns_error(path, len(row), header, line)
                count += 1
                if cap is None or count <= cap:
                    lines.append(line)
                    for j, value in enumerate(row):
                        columns[j].append(value)
        except csv.Error as exc:
            raise SubmissionError(path, f"malformed CSV: {exc}", where=f"line {reader.line_num}") from None
        has_header = bool(lines) and _is_header([c[0] for c in columns], header)
        _over_limit(path, count - has_header, max_rows, what)
        if has_header:
            lines = lines[1:]
            columns = [c[1:] for c in columns]
        return cls(path, header, np.asarray(lines, dtype=np.int64), has_header, size, columns)

    def field(self, row: int, col: int) -> str:
        return self.columns[col][row].strip()

    def ids(self, col: int) -> np.ndarray:
        values = self.columns[col]
        width = self._check_width(col, np.fromiter(map(len, values), dtype=np.int64, count=len(values)))
        if width == 0:
            return np.zeros(len(values), dtype="<U1")
        raw = np.array(values, dtype=f"<U{width}")
        self._check_controls(col, raw, "\n\r")  # quoted line breaks, before stripping could hide them
        ids = np.strings.strip(raw)
        self._check_controls(col, ids, "\t")
        return ids

    def numbers(self, col: int) -> tuple[np.ndarray, int | None]:
        values = self.columns[col]
        if not values:
            return np.zeros(0), None
        longest = max(map(len, values))
        if longest > MAX_LINE_BYTES:
            i = next(i for i, v in enumerate(values) if len(v) == longest)
            raise SubmissionError(self.path, f"{self.header[col]} of {longest:,} characters", where=self.where(i))
        return _parse_each(np.array(values, dtype=f"<U{max(longest, 1)}"))
