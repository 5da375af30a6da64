"""Content-addressed stage cache.

An entry is a directory ``objects/<key[:2]>/<key>/`` holding the files a stage wrote plus
``meta.json``. It is written in a private temporary directory (files fsynced) and renamed into place in
one step, so an interrupted run (even kill -9) leaves either a complete entry or none: the next run
simply recomputes what is missing. Location: ``--cache-dir``, else ``HARNESS_CACHE_DIR``, else the user
cache directory (``$XDG_CACHE_HOME/harness`` or ``~/.cache/harness``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

from harness.hashing import sha256_json  # not harness.spec: the cache needs no YAML


def default_cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "harness"


def make_key(**parts: Any) -> str:
    """The key of a stage output: a hash of everything it depends on (configs, versions, input keys)."""
    return sha256_json(parts)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(dirpath))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a mix (write, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


class Cache:
    """A directory of immutable, atomically published stage outputs. ``enabled=False`` never reads
    existing entries (``--no-cache``) but still writes into a throw-away location."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        if enabled:
            self.root = Path(root) if root is not None else default_cache_dir()
        else:
            self.root = Path(tempfile.mkdtemp(prefix="harness-nocache-"))
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

    def path(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def lookup(self, key: str) -> Path | None:
        """The entry's directory if it is complete, else None."""
        path = self.path(key)
        return path if (path / "meta.json").is_file() else None

    @contextmanager
    def write(self, key: str, meta: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a private directory to fill; on success it is published as the entry for ``key``."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=self.tmp))
        try:
            yield work
            (work / "meta.json").write_text(
                json.dumps({"key": key, "created": time.time(), **(meta or {})}, indent=1, default=str)
            )
            fsync_tree(work)
            final = self.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(work, final)
            except OSError:
                if (final / "meta.json").is_file():  # another process published the same key first
                    shutil.rmtree(work, ignore_errors=True)
                else:
                    raise
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def remove(self, key: str) -> None:
        """Drop an entry (atomically: renamed away first, then deleted)."""
        path = self.path(key)
        if not path.exists():
            return
        self.tmp.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(prefix="removed-", dir=self.tmp))
        os.rename(path, doomed / "entry")
        shutil.rmtree(doomed, ignore_errors=True)

    def clean_tmp(self, older_than_s: float = 24 * 3600) -> None:
        """Remove leftovers of interrupted runs (only old ones: another run may be writing now)."""
        if not self.tmp.is_dir():
            return
        now = time.time()
        for child in self.tmp.iterdir():
            try:
                if now - child.stat().st_mtime > older_than_s:
                    shutil.rmtree(child, ignore_errors=True)
            except OSError:
                pass

    def close(self) -> None:
        if not self.enabled:
            shutil.rmtree(self.root, ignore_errors=True)
