"""Plugin manager: discovers plugins through the ``harness`` entry-point group, collects their parts,
and isolates failures so that a broken plugin never takes the CLI down.

Every hook implementation is called on its own: an exception while importing a plugin module, or
inside one of its ``register_*`` hooks, is recorded as a :class:`PluginFailure` (shown by
``harness plugins``) and only a spec that needs a part from it fails, naming the package.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
import traceback
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Iterator

import pluggy

from harness import hookspecs
from harness.errors import PluginError, UserError
from harness.kinds import KINDS

ENTRY_POINT_GROUP = "harness"



@dataclass(frozen=True)
class Part:
    """A registered factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str  # plugin (entry point) name
    package: str  # distribution that provides it
    package_version: str

    @property
    def version(self) -> str:
        """The part's own version (factory attribute ``version``), else the package version."""
        return str(getattr(self.factory, "version", self.package_version))

    @property
    def doc(self) -> str:
        lines = (inspect.getdoc(self.factory) or "").strip().splitlines()
        return lines[0] if lines else ""


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    package: str
    stage: str  # "import" or the hook name
    error: str
    traceback: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    package: str
    version: str
    hooks: tuple[str, ...]


@dataclass
class Registry:
    """Every part of every loaded plugin, by kind and name, plus the failures met while loading."""

    parts: dict[str, dict[str, Part]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)

    def names(self, kind: str) -> list[str]:
        return sorted(self.parts[kind])

    def get(self, kind: str, name: str) -> Part:
        """The part, or a PluginError with a did-you-mean and any plugin failures that may explain it."""
        try:
            return self.parts[kind][name]
        except KeyError:
            raise PluginError(self.unknown_message(kind, name)) from None

    def suggestion(self, kind: str, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(kind), n=1, cutoff=0.6)
        return close[0] if close else None

    def unknown_message(self, kind: str, name: str, *, hint: bool = True) -> str:
        message = f"unknown {kind} {name!r}"
        suggestion = self.suggestion(kind, name) if hint else None
        if suggestion:
            message += f" (did you mean {suggestion!r}?)"
        elif hint and self.names(kind):
            message += f"; known: {', '.join(self.names(kind))}"
        broken = sorted({f"{f.plugin} (package {f.package}): {f.error}" for f in self.failures})
        if broken:
            message += "; plugins that failed to load and may provide it: " + "; ".join(broken)
        return message

    def create(self, kind: str, name: str, params: dict[str, Any]) -> Any:
        """Call the factory with validated parameters; failures name the part and its package."""
        part = self.get(kind, name)
        try:
            return part.factory(**params)
        except UserError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin bug or a library's complaint: one line, naming the package
            first = (str(exc).strip().splitlines() or [""])[0]
            raise PluginError(
                f"{kind} {name!r} (package {part.package}) could not be created: {type(exc).__name__}: {first}"
            ) from exc


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"], dist.version


#: The distribution whose entry points are the built-in plugins (always loaded).
BUILTIN_DISTRIBUTION = "harness"


def _selected(package: str) -> bool:
    """``HARNESS_LOAD_PLUGINS``: comma-separated distribution names to load besides the built-ins
    (empty: the built-ins only; unset: every installed plugin), as llm and datasette do."""
    chosen = os.environ.get("HARNESS_LOAD_PLUGINS")
    if chosen is None or package in (BUILTIN_DISTRIBUTION, "unknown"):  # "unknown": no distribution metadata
        return True
    names = {_normalise(n) for n in chosen.split(",") if n.strip()}
    return _normalise(package) in names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def load_registry(extra_plugins: Iterable[tuple[str, object]] = (), *, entry_points: bool = True) -> Registry:
    """Load plugins from entry points (and ``extra_plugins``: (name, module or object) pairs, for tests)
    and collect their parts. Never raises because of a plugin (not even ``sys.exit``), and whatever a
    plugin prints while loading goes to stderr: stdout carries ``--json`` documents."""
    with stdout_to_stderr():
        return _load_registry(extra_plugins, entry_points)


def _load_registry(extra_plugins: Iterable[tuple[str, object]], entry_points: bool) -> Registry:
    registry = Registry()
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}

    candidates: list[tuple[str, str, str, Callable[[], object]]] = []
    if entry_points:
        seen: set[str] = set()
        for ep in _entry_points():
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            package, version = _dist_of(ep)
            if not _selected(package):
                continue
            candidates.append((ep.name, package, version, ep.load))
    for name, obj in extra_plugins:
        candidates.append((name, getattr(obj, "__name__", name), "0", lambda obj=obj: obj))

    for name, package, version, load in candidates:
        try:
            module = load()
            pm.register(module, name=name)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation is the point
            registry.failures.append(
                PluginFailure(name, package, "import", _failure_text(exc), traceback.format_exc())
            )
            continue
        origins[name] = (package, version)
        for hook_name in _unknown_hooks(pm, module):  # a typo in a hook name would otherwise be silent
            registry.failures.append(PluginFailure(
                name, package, hook_name, f"{hook_name} matches no hook of the harness API "
                f"(known: {', '.join(KINDS.values())})", ""))

    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            package, version = origins.get(plugin_name, ("unknown", "unknown"))

            def register(part_name: str, factory: Callable[..., Any], *, _kind=kind, _plugin=plugin_name) -> None:
                if not isinstance(part_name, str) or not part_name:
                    raise ValueError(f"part names must be non-empty strings, got {part_name!r}")
                if not callable(factory):
                    raise TypeError(f"factory for {part_name!r} is not callable")
                existing = registry.parts[_kind].get(part_name)
                if existing is not None and existing.plugin != _plugin:
                    raise ValueError(
                        f"{_kind} {part_name!r} is already registered by plugin {existing.plugin!r} "
                        f"(package {existing.package})"
                    )
                pkg, ver = origins.get(_plugin, ("unknown", "unknown"))
                registry.parts[_kind][part_name] = Part(_kind, part_name, factory, _plugin, pkg, ver)

            try:
                impl.function(register=register)
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                registry.failures.append(
                    PluginFailure(
                        plugin_name, package, hook_name, _failure_text(exc), traceback.format_exc()
                    )
                )

    for plugin_name, (package, version) in sorted(origins.items()):
        module = pm.get_plugin(plugin_name)
        hooks = tuple(
            sorted(h for h in KINDS.values() if getattr(module, h, None) is not None)
        )
        registry.plugins.append(PluginInfo(plugin_name, package, version, hooks))
    return registry


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` whose names match no hookspec."""
    out = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is None:
            out.append(caller.name)
    return sorted(out)


def _failure_text(exc: BaseException) -> str:
    """One bounded line for a plugin's exception (its message is not ours to trust)."""
    from harness.messages import one_line

    return one_line(f"{type(exc).__name__}: {exc}", limit=300)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send stdout to stderr, at the Python level and at the file-descriptor level (a C extension
    printing while it is imported writes to fd 1 directly)."""
    sys.stdout.flush()
    saved = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptors (an embedding host): the Python-level redirect still holds
        saved = None
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        with suppress(Exception):
            sys.stdout.flush()
        with suppress(Exception):
            sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


_CACHED: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _CACHED
    if _CACHED is None:
        _CACHED = load_registry()
    return _CACHED
