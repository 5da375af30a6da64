"""Content-addressed stage cache.

An entry is a directory ``objects/<key[:2]>/<key>/`` holding the files a stage wrote plus
``meta.json``. It is written in a private temporary directory (files fsynced) and renamed into place in
one step, so an interrupted run (even kill -9) leaves either a complete entry or none: the next run
simply recomputes what is missing. Location: ``--cache-dir``, else ``HARNESS_CACHE_DIR``, else the user
cache directory (``$XDG_CACHE_HOME/harness`` or ``~/.cache/harness``).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import UserError, environment_error, is_disk_full, is_environment_error
from harness.hashing import sha256_json  # not harness.spec: the cache needs no YAML
from harness.messages import short_path
from harness.workdirs import UNLOCKED_AGE_S, PrivateDir, sweep

NOCACHE_PREFIX = "harness-nocache-"


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


_NO_HARD_LINKS = {getattr(errno, n) for n in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "EMLINK", "ENOSYS")
                  if hasattr(errno, n)}


def publish_new_file(directory: Path, names: Iterable[str], data: bytes) -> Path:
    """Write ``data`` under the first of ``names`` that does not exist yet, atomically and without ever
    replacing a file, even when other processes publish under the same names at the same moment.

    The data is written and fsynced under a private name, then hard-linked to its final name (a link
    fails if the name exists, so two writers never share one). Where hard links are not supported, the
    name is claimed with an exclusive create instead (unique, though not atomic)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".publishing-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for name in names:
            path = directory / name
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                return _create_exclusive(directory, path, names, data)
            fsync_dir(directory)
            return path
        raise FileExistsError(f"no free name in {directory}")  # pragma: no cover - names is infinite
    finally:
        with suppress(OSError):
            os.unlink(tmp)


def _create_exclusive(directory: Path, first: Path, more: Iterable[str], data: bytes) -> Path:
    for path in itertools.chain([first], (directory / n for n in more)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with suppress(OSError):
                os.unlink(path)
            raise
        fsync_dir(directory)
        return path
    raise FileExistsError(f"no free name in {directory}")  # pragma: no cover


class Cache:
    """A directory of immutable, atomically published stage outputs. ``enabled=False`` never reads
    existing entries (``--no-cache``) but still writes into a throw-away location.

    Entries are written in private directories under ``tmp/`` (see :mod:`harness.workdirs`): those of
    killed runs are swept by the next run that writes, and never those of a run still alive. Several
    runs may share one cache: two writers of one key both succeed (the second finds it published),
    and removing an entry that another run removed first is not an error. File-system failures
    (full disk, read-only or unwritable directory) are user errors naming the cache."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._own: PrivateDir | None = None
        if enabled:
            self.root = Path(root) if root is not None else default_cache_dir()
        else:
            base = tempfile.gettempdir()
            sweep(base, NOCACHE_PREFIX)
            try:
                self._own = PrivateDir(base, NOCACHE_PREFIX)
            except OSError as exc:
                raise self._error(exc, f"the temporary directory {base}") from None
            self.root = self._own.path
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self._swept = False

    def path(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def lookup(self, key: str) -> Path | None:
        """The entry's directory if it is complete, else None."""
        path = self.path(key)
        return path if (path / "meta.json").is_file() else None

    def sweep_tmp(self) -> int:
        """Remove the private directories of runs that are gone (killed, crashed); returns how many."""
        self._swept = True
        return sweep(self.tmp)

    @contextmanager
    def write(self, key: str, meta: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a private directory to fill; on success it is published as the entry for ``key``."""
        if not self._swept:
            self.sweep_tmp()
        try:
            work = PrivateDir(self.tmp, f"{key[:12]}-")
        except OSError as exc:
            raise self._error(exc) from None
        try:
            yield work.path
            self._publish(key, work.path, meta)
        except OSError as exc:
            if is_disk_full(exc) or _under(exc, self.root):
                raise self._error(exc) from None
            if exc.errno is None and _nearly_full(self.root):  # a library's bare short write
                raise self._error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
            raise
        finally:
            work.release()  # removes what is left: everything unless it was published

    def _publish(self, key: str, work: Path, meta: dict[str, Any] | None) -> None:
        (work / "meta.json").write_text(
            json.dumps({"key": key, "created": time.time(), **(meta or {})}, indent=1, default=str)
        )
        fsync_tree(work)
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "meta.json").is_file():  # else another process published the same key first
                raise
        fsync_dir(final.parent)

    def remove(self, key: str) -> None:
        """Drop an entry (atomically: renamed away first, then deleted). An entry that is not there
        (never written, or removed by a concurrent run) is not an error."""
        path = self.path(key)
        if not path.exists():
            return
        try:
            with PrivateDir(self.tmp, "removed-") as doomed:
                try:
                    os.rename(path, doomed.path / "entry")
                except FileNotFoundError:
                    return  # another run removed it between our check and the rename
        except OSError as exc:
            raise self._error(exc) from None

    def clean_tmp(self, older_than_s: float = UNLOCKED_AGE_S) -> int:
        """Remove leftovers of interrupted runs (see :meth:`sweep_tmp`); directories that carry no
        lock (older versions) only once older than ``older_than_s``."""
        self._swept = True
        return sweep(self.tmp, unlocked_age_s=older_than_s)

    def _error(self, exc: OSError, where: str | None = None) -> UserError:
        where = where or f"the cache {short_path(self.root)}"
        if is_disk_full(exc):
            return UserError(f"no space left on the device holding {where} (free some space, or use --cache-dir)")
        return environment_error(exc, where) if is_environment_error(exc) else UserError(f"cannot write {where}: {exc}")

    def close(self) -> None:
        if self._own is not None:
            self._own.release()
            self._own = None


def _nearly_full(root: Path, margin: int = 1 << 20) -> bool:
    """Less than ``margin`` bytes free on the device of ``root`` (checked before cleaning up)."""
    try:
        st = os.statvfs(root)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < margin


def _under(exc: OSError, root: Path) -> bool:
    """An environment error on a file inside the cache (not, say, an unreadable input image)."""
    if not is_environment_error(exc) or exc.filename is None:
        return False
    try:
        return Path(os.fsdecode(exc.filename)).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError, TypeError):
        return False
