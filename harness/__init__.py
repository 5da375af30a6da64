"""harness: one evaluation harness for copy detection, instance retrieval and watermarking.

Third-party plugins import the marker from here::

    import harness

    @harness.hookimpl
    def register_descriptors(register):
        register("my_descriptor", MyDescriptor)
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations; the project name of the plugin system is ``harness``.
hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["__version__", "hookimpl"]
