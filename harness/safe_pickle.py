"""A restricted unpickler for plain-data pickles (revisitop ground truth files).

Plain containers and numbers (dict, list, tuple, str, bytes, int, float, bool, None) are built by
pickle opcodes without ever resolving a global, so this unpickler refuses *every* global except a few
harmless builtin types. A pickle that tries to build anything else (an object, a function call such as
``os.system``) is rejected before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from harness.errors import SubmissionError

_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
}

#: Refuse pickles larger than this (bytes); revisitop's are about 0.5 MB.
MAX_PICKLE_BYTES = 256 * 1024 * 1024


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}: only plain data is allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids: only plain data is allowed")


def loads_plain(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` if it holds only plain data; otherwise raise :class:`SubmissionError`."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise SubmissionError(source, f"unsafe or invalid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
        raise SubmissionError(source, f"corrupt pickle: {type(exc).__name__}: {exc}") from None


def load_plain(path: str | Path, *, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Read and unpickle a plain-data pickle file with a size limit (the shared :func:`check_file` guard)."""
    from harness.submissions import check_file  # lazy: submissions imports this module lazily too

    check_file(path, max_bytes)
    return loads_plain(Path(path).read_bytes(), source=str(path))
