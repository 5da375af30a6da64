"""Memory asked for by parameters: refused in one line before it is allocated.

A parameter value can ask for more memory than any machine has (``search: {k: 1000000000}``, a
descriptor of 10**9 dimensions, an image side of 10**6 pixels). Parts check the arrays their
parameters imply with :func:`require_memory` as soon as the sizes are known (at creation, or when
the number of queries is known), against the machine's physical memory (or the cgroup limit of a
container). Anything that still fails to allocate ends as ``MemoryError``, which the CLI reports
as one line too.
"""

from __future__ import annotations

import os

from harness.errors import UserError

#: Largest descriptor dimension a part may be configured to produce (the built-ins are <= 2048).
MAX_DESCRIPTOR_DIM = 1 << 20


def physical_memory() -> int | None:
    """Bytes of memory this process may use at most: physical memory, or a smaller cgroup limit."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (total or 1 << 62):
            total = int(text)
    return total


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} EB"  # pragma: no cover


def require_memory(nbytes: float, what: str) -> None:
    """Raise a UserError if ``what`` needs more than the machine's memory (``nbytes`` estimated)."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise UserError(f"{what} needs {human_bytes(nbytes)} of memory, more than this machine's {human_bytes(total)}")


def require_dim(dim: int, what: str) -> None:
    """Refuse an absurd descriptor dimension before any image is described."""
    if dim > MAX_DESCRIPTOR_DIM:
        raise UserError(f"{what}: descriptors of {dim:,} dimensions, over the limit of {MAX_DESCRIPTOR_DIM:,}")
