"""Errors the CLI turns into one clear line and exit code 2 (a traceback only with --debug)."""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """Something the user can fix: a bad file, a bad spec, a missing plugin. Exit code 2."""

    exit_code = 2


class SubmissionError(UserError):
    """An untrusted input file was rejected. The message names the file, the row or field, and why."""

    def __init__(self, path: object, reason: str, *, where: str | None = None) -> None:
        self.path = str(path)
        self.where = where
        self.reason = reason
        location = f"{self.path}: {where}" if where else self.path
        super().__init__(f"{location}: {reason}")


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
