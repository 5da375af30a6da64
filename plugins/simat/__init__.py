"""SIMAT (arXiv 2112.03162) and composed image retrieval: datasets (``simat``, ``simat_demo``,
``composed_folder``), metrics (``simat.score``, ``simat.recall_at_5``, ``composed.recall``), composers
(``simat.arithmetic``, ``composed.sum``; a proposed new part kind) and the safe converter of SIMAT's
pickled heads (``python -m harness_plugins.simat.convert_heads``)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_datasets(register):
    from .composed_folder import ComposedFolderDataset
    from .dataset import SimatDataset
    from .demo import SimatDemoDataset

    register("simat", SimatDataset)
    register("simat_demo", SimatDemoDataset)
    register("composed_folder", ComposedFolderDataset)


@hookimpl
def register_metrics(register):
    from .metrics import ComposedRecall, SimatOracleRecall, SimatScore

    register("simat.score", SimatScore)
    register("simat.recall_at_5", SimatOracleRecall)
    register("composed.recall", ComposedRecall)


@hookimpl
def register_composers(register):
    from .composer import SimatArithmetic, SumComposer

    register("simat.arithmetic", SimatArithmetic)
    register("composed.sum", SumComposer)
