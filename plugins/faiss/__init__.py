"""faiss indexes: factory strings, L2 / inner product, training, kNN, global top-K and range search."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_indexes(register):
    from .index import FaissIndex

    register("faiss", FaissIndex)
