import os
import sys
from pathlib import Path

import pytest

# The suite sees the built-in plugins only, whatever else is installed in the environment; a test that
# installs a plugin names it in HARNESS_LOAD_PLUGINS itself.
os.environ["HARNESS_LOAD_PLUGINS"] = ""

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def toy_registry():
    import toy_plugins

    from harness.testing import registry_with

    return registry_with(toy_plugins)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache directory."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "harness-cache"))
