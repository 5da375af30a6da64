"""Opening paths the user named: regular files only, and never a blocking open.

``open()`` on a FIFO blocks until a writer appears (forever, if none does); a device such as
``/dev/zero`` never ends. :func:`open_regular` opens non-blocking, checks the opened descriptor with
``fstat`` (no race with a path swapped in between) and refuses anything but a regular file.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path is a directory, FIFO, device or socket."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """A binary file object for reading ``path``, which must be a regular file (else
    :class:`NotRegularFile`, an OSError whose ``strerror`` says what it is)."""
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
            raise NotRegularFile(0, kind, os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
