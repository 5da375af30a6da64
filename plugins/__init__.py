"""Built-in plugins of harness, installed as the ``harness_plugins`` package.

Each subpackage is one plugin, registered through the ``harness`` entry-point group in pyproject.toml
exactly as a third-party package registers its own. Registration modules stay light: parts import
their submodules inside the hooks, and heavy libraries inside methods.
"""
