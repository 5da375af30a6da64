"""Errors the CLI turns into one clear line and exit code 2 (a traceback only with --debug)."""

from __future__ import annotations

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
