"""Neural descriptors: any timm model (weights from a local checkpoint) and TorchScript exports."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_descriptors(register):
    from .descriptors import TimmDescriptor, TorchScriptDescriptor

    register("timm", TimmDescriptor)
    register("torchscript", TorchScriptDescriptor)
