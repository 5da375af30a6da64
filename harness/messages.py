"""Untrusted values in messages: bounded, single-line renderings.

An error message may quote what the user sent (an id, a value, a file name). Such a value is never
rendered in full: :func:`short_repr` visits only as much of it as fits in the message (a structure
whose containers share references can expand to gigabytes when walked, and ``repr`` would walk it
all), and :func:`one_line` escapes control characters, so that a file name or an id holding a newline
cannot forge a second ``error:`` line or drive the terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Longest line the CLI prints for one error (longer ones are cut, saying how much was cut).
MAX_LINE = 2000
#: Default budget of :func:`short_repr`, in characters.
SHORT = 80
_DEPTH = 4  # nested containers shown before "..."


def one_line(text: object, limit: int = MAX_LINE) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u2028``...), cut to
    ``limit`` characters. Cheap when there is nothing to escape."""
    s = text if isinstance(text, str) else str(text)
    cut = len(s) - limit
    if cut > 0:
        s = s[:limit]
    if not s.isprintable():
        s = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
    if cut > 0:
        s += f"... ({cut:,} more characters)"
    return s


def short_repr(value: Any, limit: int = SHORT) -> str:
    """A ``repr``-like rendering of ``value`` of about ``limit`` characters at most, in time bounded by
    ``limit`` (not by the size of ``value``): containers are walked only until the budget is spent,
    long strings and huge integers are abridged, unknown objects are named by type only."""
    out = _Writer(limit)
    try:
        _render(value, out, 0)
    except _Full:
        pass
    return out.text()


def short_path(path: str | os.PathLike[str], limit: int = 200) -> str:
    """A file name for a message: escaped and cut (the tail is kept: it names the file)."""
    s = one_line(os.fspath(path), limit=10 * limit)
    return s if len(s) <= limit else "..." + s[-(limit - 3):]


class _Full(Exception):
    pass


class _Writer:
    def __init__(self, limit: int) -> None:
        self.limit = max(8, limit)
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, s: str) -> None:
        room = self.limit - self.size
        if len(s) > room:
            self.parts.append(s[:room])
            self.size = self.limit
            self.truncated = True
            raise _Full
        self.parts.append(s)
        self.size += len(s)

    def text(self) -> str:
        body = "".join(self.parts)
        return body + "..." if self.truncated else body


def _render(v: Any, out: _Writer, depth: int) -> None:
    if v is None or isinstance(v, (bool, float, complex)):
        out.write(repr(v))
    elif isinstance(v, int):
        # repr of a huge int is quadratic (and refused past 4300 digits): name its size instead
        out.write(repr(v) if v.bit_length() <= 256 else f"<int of {v.bit_length():,} bits>")
    elif isinstance(v, str):
        head = v[: out.limit]
        text = one_line(repr(head))
        out.write(text if len(head) == len(v) else text + f"... ({len(v):,} characters)")
    elif isinstance(v, (bytes, bytearray)):
        head = bytes(v[: out.limit])
        out.write(repr(head) if len(head) == len(v) else repr(head) + f"... ({len(v):,} bytes)")
    elif isinstance(v, (list, tuple, set, frozenset, dict)):
        _container(v, out, depth)
    elif isinstance(v, os.PathLike):
        out.write(f"{type(v).__name__}({short_path(v, out.limit)!r})")
    else:
        _other(v, out)


def _container(v: Any, out: _Writer, depth: int) -> None:
    if isinstance(v, dict):
        open_, close = "{", "}"
    elif isinstance(v, list):
        open_, close = "[", "]"
    elif isinstance(v, tuple):
        open_, close = "(", ")"
    else:
        if not v:
            out.write(f"{type(v).__name__}()")
            return
        open_, close = "{", "}"
    if depth >= _DEPTH and len(v):
        out.write(f"{open_}...{close}")
        return
    out.write(open_)
    for i, item in enumerate(v.items() if isinstance(v, dict) else v):
        if i:
            out.write(", ")
        if isinstance(v, dict):
            _render(item[0], out, depth + 1)
            out.write(": ")
            _render(item[1], out, depth + 1)
        else:
            _render(item, out, depth + 1)
    if isinstance(v, tuple) and len(v) == 1:
        out.write(",")
    out.write(close)


def _other(v: Any, out: _Writer) -> None:
    np = sys.modules.get("numpy")  # numpy values, if numpy is loaded: a scalar's repr is short, an array's not
    if np is not None and isinstance(v, np.generic) and not isinstance(v, (np.void, np.object_)):
        item = v.item()
        if isinstance(item, (int, float, complex, bool, str, bytes)):
            _render(item, out, 0)
            return
    if np is not None and isinstance(v, np.ndarray):
        out.write(f"array(shape={v.shape}, dtype={v.dtype})")
        return
    out.write(f"<{type(v).__name__} object>")
