"""Private temporary directories that a later run can tell are abandoned.

A run writes each cache entry in a private directory and renames it into place; a run killed with
``kill -9`` (or by a power cut) leaves that directory behind. Age says nothing about whether its owner
is alive (an extraction may run for days), so each directory ``<parent>/<name>`` has a lock file
``<parent>/<name>.lock`` that its owner holds an ``flock`` on for as long as it lives. The kernel
releases the lock when the process dies, however it dies; :func:`sweep` removes every directory whose
lock it can take. The lock file is locked before it becomes visible under its final name (created
hidden, locked, then renamed), so a sweeper never sees an unlocked lock of a live owner.

Directories without a lock file (left by older versions) are removed once they are old. Without
``fcntl`` (Windows) only the age rule applies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
_HIDDEN = ".locking-"  # + prefix + random: a lock file before it is renamed to its final name
#: Directories without a lock file are swept once older than this (seconds).
UNLOCKED_AGE_S = 24 * 3600


class PrivateDir:
    """A new directory under ``parent`` owned by this process until :meth:`release`.

    ``release(remove=True)`` deletes what is left of it (nothing, if it was renamed away to publish
    it); use it as a context manager to release on exit, whatever happens."""

    def __init__(self, parent: str | os.PathLike[str], prefix: str = "") -> None:
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.lock = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._fd: int | None = None
        try:
            self._fd = _locked_file(parent, self.lock, prefix)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def release(self, remove: bool = True) -> None:
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            with suppress(OSError):
                os.unlink(self.lock)  # first the name, then the lock: a sweeper never removes a live dir
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PrivateDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _locked_file(parent: Path, final: Path, prefix: str) -> int | None:
    """Create ``final`` already locked: a hidden file is locked, then renamed to its final name."""
    if fcntl is None:
        return None
    fd, hidden = tempfile.mkstemp(prefix=f"{_HIDDEN}{prefix}", dir=parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people looking at the folder
        os.rename(hidden, final)
    except BaseException:
        with suppress(OSError):
            os.unlink(hidden)
        os.close(fd)
        raise
    return fd


def sweep(parent: str | os.PathLike[str], prefix: str = "", *, unlocked_age_s: float = UNLOCKED_AGE_S) -> int:
    """Remove the private directories under ``parent`` (names starting with ``prefix``) whose owner is
    gone; returns how many were removed. Safe to run while other processes create and use theirs."""
    parent = Path(parent)
    try:
        names = os.listdir(parent)
    except OSError:
        return 0
    removed = 0
    present = set(names)
    now = time.time()
    for name in names:
        path = parent / name
        if name.startswith(_HIDDEN + prefix):  # a lock being created, or one whose creator died
            if _older(path, now, 3600):
                with suppress(OSError):
                    os.unlink(path)
            continue
        if not name.startswith(prefix):
            continue
        if name.endswith(LOCK_SUFFIX):
            if _abandoned(path):
                shutil.rmtree(parent / name[: -len(LOCK_SUFFIX)], ignore_errors=True)
                with suppress(OSError):
                    os.unlink(path)
                removed += 1
            continue
        if name + LOCK_SUFFIX not in present and path.is_dir() and _older(path, now, unlocked_age_s):
            if fcntl is not None and (parent / (name + LOCK_SUFFIX)).exists():  # its lock appeared since
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def _abandoned(lock: Path) -> bool:
    """True if nobody holds ``lock`` (its owner exited or was killed); the lock is then ours."""
    if fcntl is None:
        return _older(lock, time.time(), UNLOCKED_AGE_S)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # removed meanwhile by its owner or another sweeper
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its owner is alive
    finally:
        os.close(fd)  # (releases our lock: the directory goes next, and nobody reuses its name)
    return True


def _older(path: Path, now: float, age_s: float) -> bool:
    try:
        return now - path.stat().st_mtime > age_s
    except OSError:
        return False
