"""Plugin discovery and isolation: a broken plugin is reported, never fatal, and only specs that use it fail."""

from __future__ import annotations

import types

import pytest

import harness
import toy_plugins
from harness import plugins as plugins_mod
from harness.errors import PluginError, SpecError
from harness.plugins import load_registry
from harness.spec import load_spec


class FakeEntryPoint:
    def __init__(self, name, loader):
        self.name = name
        self._loader = loader
        self.dist = None

    def load(self):
        return self._loader()


def _broken_import():
    raise ImportError("No module named 'missing_dependency'")


def _hook_raises():
    mod = types.ModuleType("half_broken")

    @harness.hookimpl
    def register_descriptors(register):
        register("fine_descriptor", toy_plugins.MeanColor)

    @harness.hookimpl
    def register_indexes(register):
        raise RuntimeError("index backend not compiled")

    mod.register_descriptors = register_descriptors
    mod.register_indexes = register_indexes
    return mod


@pytest.fixture
def registry(monkeypatch):
    import harness_plugins.retrieval

    eps = [FakeEntryPoint("broken", _broken_import), FakeEntryPoint("half", _hook_raises),
           FakeEntryPoint("toy", lambda: toy_plugins), FakeEntryPoint("retrieval", lambda: harness_plugins.retrieval)]
    monkeypatch.setattr(plugins_mod, "_entry_points", lambda: eps)
    return load_registry()


def test_failures_are_recorded_not_raised(registry):
    failures = {(f.plugin, f.stage): f.error for f in registry.failures}
    assert failures[("broken", "import")] == "ImportError: No module named 'missing_dependency'"
    assert failures[("half", "register_indexes")] == "RuntimeError: index backend not compiled"
    # the healthy hooks of a half-broken plugin and the healthy plugins still register
    assert "fine_descriptor" in registry.names("descriptor")
    assert "brute" in registry.names("index")
    assert [p.name for p in registry.plugins] == ["half", "retrieval", "toy"]


def test_only_specs_using_a_broken_plugin_fail(registry, tmp_path):
    text = (
        "task: t\ndataset: {name: toy, root: /tmp/x}\ndescriptor: {name: fine_descriptor}\n"
        "index: {name: brute}\nmetrics: [{name: recall_at}]\n"
    )
    (tmp_path / "ok.yaml").write_text(text)
    load_spec(tmp_path / "ok.yaml", registry=registry)
    (tmp_path / "bad.yaml").write_text(text.replace("{name: brute}", "{name: hnsw}"))
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "bad.yaml", registry=registry)
    message = str(info.value)
    assert "unknown index 'hnsw'" in message
    assert "half (package unknown): RuntimeError: index backend not compiled" in message
    assert "broken (package unknown): ImportError" in message


def test_unknown_part_suggests(registry):
    with pytest.raises(PluginError, match="did you mean 'brute'"):
        registry.get("index", "brut")


def test_conflicting_names_are_a_failure_of_the_second_plugin(monkeypatch):
    twin = types.ModuleType("twin")

    @harness.hookimpl
    def register_indexes(register):
        register("brute", toy_plugins.BruteForce)

    twin.register_indexes = register_indexes
    eps = [FakeEntryPoint("toy", lambda: toy_plugins), FakeEntryPoint("twin", lambda: twin)]
    monkeypatch.setattr(plugins_mod, "_entry_points", lambda: eps)
    reg = load_registry()
    assert reg.get("index", "brute").plugin == "toy"
    assert any(f.plugin == "twin" and "already registered by plugin 'toy'" in f.error for f in reg.failures)


def test_factory_errors_name_the_package(toy_registry):
    with pytest.raises(PluginError, match=r"dataset 'toy' \(package toy_plugins\) could not be created: TypeError"):
        toy_registry.create("dataset", "toy", {"root": "/x", "unknown": 1})


def test_builtins_are_registered_through_entry_points():
    reg = load_registry()
    names = {p.name for p in reg.plugins}
    assert {"disc21", "revisitop", "faiss", "timm", "classic", "postprocess", "augly", "demo"} <= names
    assert all(p.package == "harness" for p in reg.plugins if p.name in {"disc21", "faiss"})


def test_a_hook_name_matching_no_hookspec_is_a_reported_failure(monkeypatch):
    typo = types.ModuleType("typo")

    @harness.hookimpl
    def register_descriptor(register):  # missing "s"
        register("never", toy_plugins.MeanColor)

    @harness.hookimpl
    def register_indexes(register):
        register("brute", toy_plugins.BruteForce)

    typo.register_descriptor = register_descriptor
    typo.register_indexes = register_indexes
    monkeypatch.setattr(plugins_mod, "_entry_points", lambda: [FakeEntryPoint("typo", lambda: typo)])
    reg = load_registry()
    (failure,) = reg.failures
    assert failure.plugin == "typo" and failure.stage == "register_descriptor"
    assert "matches no hook of the harness API" in failure.error
    assert "brute" in reg.names("index") and "never" not in reg.names("descriptor")


class _Dist:
    def __init__(self, name):
        self.metadata = {"Name": name}
        self.version = "1.0"


def test_harness_load_plugins_selects_distributions(monkeypatch):
    def ep(name, dist):
        e = FakeEntryPoint(name, lambda: toy_plugins if name == "toy" else types.ModuleType(name))
        e.dist = _Dist(dist)
        return e

    eps = [ep("toy", "harness-toy"), ep("other", "harness_other"), ep("builtin", "harness")]
    monkeypatch.setattr(plugins_mod, "_entry_points", lambda: eps)
    for chosen, expected in [(None, {"toy", "other", "builtin"}), ("", {"builtin"}),
                             ("harness-other", {"other", "builtin"}), ("Harness_Toy, harness-other", {"toy", "other", "builtin"})]:
        if chosen is None:
            monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("HARNESS_LOAD_PLUGINS", chosen)
        assert {p.name for p in load_registry().plugins} == expected, chosen


def test_the_suite_sees_only_the_built_in_plugins():
    from harness.plugins import get_registry

    assert {p.package for p in get_registry().plugins} == {"harness"}
