"""Writing large ``.npy`` files block by block, without a memory map.

Writing through a memory map (``np.lib.format.open_memmap``) into a sparse file turns a full disk into
a SIGBUS that kills the process with no message and no cleanup. :class:`NpyWriter` writes the header
and then the rows with ordinary ``write`` calls, so a full disk is an ``OSError`` (ENOSPC) that the
cache turns into one line, and memory stays bounded by the block being written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np


class NpyWriter:
    """A C-ordered 2-D ``.npy`` file of known shape, filled in order: ``write(rows)`` appends rows,
    ``close()`` checks that exactly ``shape[0]`` rows were written."""

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, int], dtype: np.dtype | type = np.float32) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._fh: BinaryIO | None = open(self.path, "wb")
        try:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
            np.lib.format.write_array_header_1_0(self._fh, header)
        except BaseException:
            self._fh.close()
            raise

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1]:
            raise ValueError(f"rows of shape {rows.shape} for a file of shape {self.shape}")
        if self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"more than {self.shape[0]} rows written to {self.path}")
        assert self._fh is not None
        self._fh.write(memoryview(rows).cast("B"))
        self.rows += len(rows)

    def close(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        fh.close()  # a deferred write error (ENOSPC on flush) surfaces here
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.rows} rows written to {self.path}, expected {self.shape[0]}")

    def abort(self) -> None:
        """Close without checks (after an error: the caller discards the file)."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` for 2-D numeric arrays, written with Python's file writes: numpy's own writer
    reports a full disk as a bare short write (``OSError: N requested and M written``, no errno)."""
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype.hasobject:
        np.save(path, array)
        return
    with NpyWriter(path, array.shape, array.dtype) as out:
        out.write(array)
