"""YAML task specs: loading with line numbers, ``--set`` overrides, strict validation.

Every problem is collected (not just the first) as a :class:`~harness.errors.SpecIssue` carrying
``file:line`` (or the ``--set`` that introduced the node) and a did-you-mean where one exists. Part
parameters are validated against the factories' signatures (:mod:`harness.params`) before any data
is touched.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import safe_yaml
from harness.errors import SpecError, SpecIssue, UserError
from harness.hashing import sha256_json
from harness.messages import short_repr
from harness.params import check_params

PathT = tuple  # tuple of str keys / int indices


@dataclass(frozen=True)
class FieldRule:
    kind: str  # "str", "int", "part", "parts", "mapping"
    required: bool = False
    part_kind: str | None = None  # registry kind for "part"/"parts"
    doc: str = ""


#: The top-level keys of a spec. Unknown keys are errors.
FIELDS: dict[str, FieldRule] = {
    "task": FieldRule("str", True, doc="name of the task; names the result file"),
    "description": FieldRule("str", doc="free text"),
    "seed": FieldRule("int", doc="seed from which every random generator is derived (default 0)"),
    "dataset": FieldRule("part", True, "dataset"),
    "transform": FieldRule("part", False, "transform", "query generation: applied to every query image"),
    "descriptor": FieldRule("part", True, "descriptor"),
    "postprocess": FieldRule("parts", False, "postprocessor"),
    "index": FieldRule("part", True, "index"),
    "metrics": FieldRule("parts", True, "metric"),
    "extraction": FieldRule("mapping", doc="batch_size, workers, shard_size (ints): extraction settings"),
}

EXTRACTION_FIELDS = {"batch_size": 1, "workers": 0, "shard_size": 1}  # key -> smallest allowed value
#: key -> largest allowed value: a batch or a shard is held in memory, each worker is a process
EXTRACTION_MAX = {"batch_size": 65536, "workers": 256, "shard_size": 10_000_000}


@dataclass(frozen=True)
class PartSpec:
    """One ``{name: ..., **params}`` node of a spec."""

    kind: str
    name: str
    params: dict[str, Any]
    path: str  # "descriptor", "metrics[1]"


@dataclass
class Spec:
    source: str
    data: dict[str, Any]  # the resolved mapping (after overrides), as stored in results
    task: str
    description: str
    seed: int
    dataset: PartSpec
    transform: PartSpec | None
    descriptor: PartSpec
    postprocess: list[PartSpec]
    index: PartSpec
    metrics: list[PartSpec]
    extraction: dict[str, int] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return sha256_json(self.data)


# --- loading with locations ----------------------------------------------------------------------


class _Locations:
    """Where each node came from: ``file:line`` from the YAML, or the ``--set`` that replaced it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[PathT, int] = {}
        self.overrides: dict[PathT, str] = {}

    def of(self, path: PathT) -> str:
        for n in range(len(path), -1, -1):  # a node under an override came from the override
            if path[:n] in self.overrides:
                return self.overrides[path[:n]]
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source


def _walk_nodes(node: yaml.Node, path: PathT, loc: _Locations, issues: list[SpecIssue],
                active: frozenset[int] = frozenset()) -> None:
    if id(node) in active:  # an alias inside itself (`a: &x [*x]`) would recurse forever
        raise SpecError([SpecIssue(f"{loc.source}:{node.start_mark.line + 1}", dotted(path), "recursive YAML alias")])
    active = active | {id(node)}
    loc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    SpecIssue(f"{loc.source}:{line}", dotted(path + (key,)), f"duplicate key (first at line {seen[key]})")
                )
            seen[key] = line
            loc.lines[path + (key,)] = line
            _walk_nodes(value_node, path + (key,), loc, issues, active)
            loc.lines[path + (key,)] = line  # report a mapping value at its key's line
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _walk_nodes(child, path + (i,), loc, issues, active)


def dotted(path: PathT) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _read_yaml(text: str, source: str) -> tuple[Any, _Locations, list[SpecIssue]]:
    loc = _Locations(source)
    issues: list[SpecIssue] = []
    node, data = safe_yaml.compose(text, source)  # size, depth and alias-expansion limits
    if node is not None:
        _walk_nodes(node, (), loc, issues)
    return data, loc, issues


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> PathT:
    """``metrics[0].scorer`` or ``metrics.0.scorer`` -> ("metrics", 0, "scorer")."""
    out: list[Any] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text[pos] == ".":
            pos += 1
            continue
        m = _PATH_TOKEN.match(text, pos)
        if not m:
            raise UserError(f"--set: cannot parse path {text!r} at {text[pos:]!r}")
        key, index = m.groups()
        out.append(int(index) if index is not None else (int(key) if key.isdigit() else key))
        pos = m.end()
    if not out:
        raise UserError(f"--set: empty path in {text!r}")
    return tuple(out)


def apply_override(data: Any, assignment: str, loc: _Locations) -> Any:
    """Apply ``PATH=YAML``: replace (or add) the node at PATH with the parsed YAML value."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected PATH=YAML, e.g. --set 'descriptor={{name: gist}}'")
    path_text, value_text = assignment.split("=", 1)
    path = parse_path(path_text)
    try:
        value = safe_yaml.load_value(value_text, f"--set {path_text}")
    except SpecError as exc:
        raise UserError(f"--set {path_text}: {exc.issues[0].message}") from None
    if not isinstance(data, dict):  # the file's own problem (not a mapping) is reported by validation
        raise _not_a_mapping(data, loc)
    parent: Any = data
    for i, key in enumerate(path[:-1]):
        child = _child(parent, key, path[: i + 1], path_text)
        if child is None:
            child = {}
            _assign(parent, key, child, path_text)
        parent = child
    _assign(parent, path[-1], value, path_text)
    for known in [p for p in loc.overrides if p[: len(path)] == path]:
        del loc.overrides[known]
    loc.overrides[path] = f"--set {path_text}"
    return data


def _child(parent: Any, key: Any, path: PathT, text: str) -> Any:
    if isinstance(parent, dict):
        return parent.get(key)
    if isinstance(parent, list) and isinstance(key, int):
        if key < len(parent):
            return parent[key]
        raise UserError(f"--set {text}: index {key} out of range at {dotted(path)} (length {len(parent)})")
    raise UserError(f"--set {text}: {dotted(path[:-1]) or 'the spec'} is not a mapping or list")


def _assign(parent: Any, key: Any, value: Any, text: str) -> None:
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list) and isinstance(key, int) and key <= len(parent):
        if key == len(parent):
            parent.append(value)
        else:
            parent[key] = value
    else:
        raise UserError(f"--set {text}: cannot set {key!r} here")


# --- validation ------------------------------------------------------------------------------------


def load_spec(path: str | os.PathLike[str], overrides: list[str] = (), registry: Any = None) -> Spec:
    """Read, override and validate a spec; raises SpecError listing every problem found."""
    source = str(path)
    text = safe_yaml.read_text(path)  # a regular file, size-limited; UserError naming it otherwise
    data, loc, issues = _read_yaml(text, source)
    data = copy.deepcopy(data) if data is not None else {}
    if overrides and not isinstance(data, dict):
        raise _not_a_mapping(data, loc)
    for assignment in overrides:
        data = apply_override(data, assignment, loc)
    if registry is None:
        from harness.plugins import get_registry

        registry = get_registry()
    return validate(data, loc, issues, registry)


def _not_a_mapping(data: Any, loc: _Locations) -> SpecError:
    return SpecError([SpecIssue(loc.of(()), "", f"a spec must be a mapping of keys (task, dataset, ...), "
                                                f"got {type(data).__name__}")])


def validate(data: Any, loc: _Locations, issues: list[SpecIssue], registry: Any) -> Spec:
    def issue(path: PathT, message: str, suggestion: str | None = None) -> None:
        issues.append(SpecIssue(loc.of(path), dotted(path), message, suggestion))

    if not isinstance(data, dict):
        issue((), f"a spec must be a mapping of keys (task, dataset, ...), got {type(data).__name__}")
        raise SpecError(issues)

    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), list(FIELDS), n=1, cutoff=0.6)
            issue((key,), "unknown key", close[0] if close else None)
    for key, rule in FIELDS.items():
        if rule.required and key not in data:
            issue((), f"missing required key {key!r}")

    values: dict[str, Any] = {}
    for key, rule in FIELDS.items():
        if key not in data or data[key] is None and not rule.required:
            continue
        value = data[key]
        path = (key,)
        if rule.kind == "str":
            if not isinstance(value, str) or not value.strip():
                issue(path, f"expected a non-empty string, got {value!r}")
            elif key == "task" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", value):
                issue(path, "task names use letters, digits, '_', '.', '+', '-' (they name result files)")
            values[key] = value
        elif rule.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                issue(path, f"expected an integer, got {value!r}")
            values[key] = value
        elif rule.kind == "part":
            values[key] = _part(value, path, rule.part_kind, registry, issue)
        elif rule.kind == "parts":
            if not isinstance(value, list):
                issue(path, f"expected a list of {rule.part_kind} mappings, got {type(value).__name__}")
                continue
            if rule.required and not value:
                issue(path, f"at least one {rule.part_kind} is required")
            values[key] = [_part(v, path + (i,), rule.part_kind, registry, issue) for i, v in enumerate(value)]
        elif rule.kind == "mapping":
            values[key] = _extraction(value, path, issue)

    if issues:
        raise SpecError(issues)
    return Spec(
        source=loc.source,
        data=data,
        task=values["task"],
        description=values.get("description", ""),
        seed=values.get("seed", 0),
        dataset=values["dataset"],
        transform=values.get("transform"),
        descriptor=values["descriptor"],
        postprocess=values.get("postprocess", []),
        index=values["index"],
        metrics=values["metrics"],
        extraction=values.get("extraction", {}),
    )


def _part(value: Any, path: PathT, kind: str, registry: Any, issue: Any) -> PartSpec | None:
    if isinstance(value, str):  # shorthand: `descriptor: gist`
        value = {"name": value}
    if not isinstance(value, dict):
        issue(path, f"expected a mapping with a 'name' (a {kind}), got {type(value).__name__}")
        return None
    name = value.get("name")
    if not isinstance(name, str):
        issue(path, f"missing 'name' of the {kind}" if name is None else f"'name' must be a string, got {name!r}")
        return None
    params = {k: _expand_home(v) for k, v in value.items() if k != "name"}
    if name not in registry.parts[kind]:
        issue(path + ("name",), registry.unknown_message(kind, name, hint=False), registry.suggestion(kind, name))
        return None
    clean, problems = check_params(registry.get(kind, name).factory, params)
    for p in problems:
        where = path + ((p.param,) if p.param and p.param in value else ())
        label = f"{kind} {name!r}: parameter {p.param!r}" if p.param else f"{kind} {name!r}"
        issue(where, f"{label}: {p.message}", p.suggestion)
    return PartSpec(kind, name, clean, dotted(path))


def _extraction(value: Any, path: PathT, issue: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        issue(path, f"expected a mapping, got {type(value).__name__}")
        return {}
    out = {}
    for k, v in value.items():
        if k not in EXTRACTION_FIELDS:
            close = difflib.get_close_matches(str(k), list(EXTRACTION_FIELDS), n=1, cutoff=0.6)
            issue(path + (k,), "unknown key", close[0] if close else None)
        elif isinstance(v, bool) or not isinstance(v, int) or not EXTRACTION_FIELDS[k] <= v <= EXTRACTION_MAX[k]:
            issue(path + (k,), f"expected an integer from {EXTRACTION_FIELDS[k]} to {EXTRACTION_MAX[k]:,}, "
                               f"got {short_repr(v)}")
        else:
            out[k] = v
    return out


def _expand_home(value: Any) -> Any:
    """Strings starting with ``~/`` are paths under the home directory, wherever they appear."""
    if isinstance(value, str) and value.startswith("~/"):
        return os.path.expanduser(value)
    if isinstance(value, dict):
        return {k: _expand_home(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_home(v) for v in value]
    return value
