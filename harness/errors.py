"""Errors the CLI turns into one clear line and exit code 2 (a traceback only with --debug)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass


class UserError(Exception):
    """Something the user can fix: a bad file, a bad spec, a missing plugin. Exit code 2."""

    exit_code = 2


class SubmissionError(UserError):
    """An untrusted input file was rejected. The message names the file, the row or field, and why.

    ``path`` is shown escaped (:func:`shown_path`); ``reason`` must show untrusted values through
    :func:`shown`, so the message is always one line."""

    def __init__(self, path: object, reason: str, *, where: str | None = None) -> None:
        self.path = str(path)
        self.where = where
        self.reason = reason
        location = f"{shown_path(self.path)}: {where}" if where else shown_path(self.path)
        super().__init__(f"{location}: {reason}")


def shown(value: object, limit: int = 40) -> str:
    """An untrusted value as it may appear in an error message: ``repr``-escaped (so a newline or a
    control character in it can never start a line of its own) and cut to ``limit`` characters, with
    its full length said. Only strings, bytes and numbers are rendered; anything else by type name
    (its repr could be huge or slow)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value[: 4 * limit + 4])
        text, length = data.decode("utf-8", "backslashreplace"), len(value)
    elif isinstance(value, str):
        text, length = value[: limit + 1], len(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
        if len(text) <= limit:
            return text
        return f"{text[:limit]}... ({len(text):,} digits)"
    else:
        return f"<{type(value).__name__}>"
    if length > limit or len(text) > limit:
        return f"{text[:limit]!r}... ({length:,} {'bytes' if isinstance(value, (bytes, bytearray, memoryview)) else 'characters'})"
    return repr(text)


def shown_path(path: str, limit: int = 300) -> str:
    """A file name for an error message: as is when printable, else escaped like ``repr``; long
    names are cut."""
    if path.isprintable() and len(path) <= limit:
        return path
    text = repr(path[:limit])[1:-1]
    return text if len(path) <= limit else f"{text}... ({len(path):,} characters)"


class PluginError(UserError):
    """A plugin failed to load or a part could not be created."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, located as precisely as the YAML allows."""

    location: str  # "spec.yaml:12" or "--set descriptor"
    path: str  # dotted path of the node, e.g. "descriptor.pooling"
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.path}: {self.message}" if self.path else f"{self.location}: {self.message}"
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text


class SpecError(UserError):
    """A spec failed validation; carries every issue found, not just the first."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that a terminated run cleans up as an interrupted one
    does (``finally`` blocks and cache temp dirs), like KeyboardInterrupt on SIGINT."""


#: OSError numbers that describe the machine, not a bug: reported as user errors (exit 2, one line).
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENAMETOOLONG", "ENOTDIR", "EISDIR", "ELOOP",
                 "EEXIST", "EMLINK", "EMFILE", "ENFILE", "EIO", "ENXIO", "ETXTBSY", "EFBIG", "ENODEV", "EBUSY",
                 "EOVERFLOW")
    if hasattr(errno, name)
)


def is_environment_error(exc: BaseException) -> bool:
    """An OSError caused by the file system (permissions, read-only, full, names too long...)."""
    return isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def environment_message(exc: OSError, where: str | None = None) -> str:
    """One line for a file-system failure: ``no space left on ...``, or ``[cannot write WHERE: ]PATH:
    reason``. ``where`` names what was being written (e.g. "the cache /data/cache"): a failed
    ``write`` carries no file name."""
    from harness.messages import short_path

    name = exc.filename
    path = short_path(os.fsdecode(name)) if isinstance(name, (str, bytes, os.PathLike)) else None
    if is_disk_full(exc):
        return f"no space left on the device holding {where or path or 'a file being written'}"
    reason = exc.strerror or type(exc).__name__
    text = f"{path}: {reason}" if path and not (where and where.endswith(path)) else reason
    if exc.filename2 is not None:
        text += f" (and {short_path(os.fsdecode(exc.filename2))})"
    return f"cannot write {where}: {text}" if where else text


def environment_error(exc: OSError, where: str | None = None) -> UserError:
    """The user error for a file-system failure (see :func:`environment_message`)."""
    return UserError(environment_message(exc, where))


def error_lines(exc: BaseException) -> list[str]:
    """The ``error:`` lines of a user error: one per spec issue, otherwise one; each escaped (no raw
    newline or control character from user data) and cut to a bounded length."""
    from harness.messages import one_line

    issues = getattr(exc, "issues", None)
    if isinstance(exc, SpecError) and issues:
        return [one_line(str(i)) for i in issues]
    return [one_line(str(exc) or type(exc).__name__)]
