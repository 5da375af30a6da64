"""YAML task specs: loading with line numbers, ``--set`` overrides, strict validation.

Every problem is collected (not just the first) as a :class:`~harness.errors.SpecIssue` carrying
``file:line`` (or the ``--set`` that introduced the node) and a did-you-mean where one exists. Part
parameters are validated against the factories' signatures (:mod:`harness.params`) before any data
is touched.
"""

from __future__ import annotations

import copy
import difflib
import inspect
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
from harness.params import check_params, part_params
from harness.parts import Field

PathT = tuple  # tuple of str keys / int indices


#: Keys every spec may have, whatever its pipeline; every other key belongs to the pipeline.
COMMON_FIELDS: dict[str, Field] = {
    "task": Field("str", required=True, doc="name of the task; names the result file"),
    "description": Field("str", doc="free text"),
    "seed": Field("int", doc="seed from which every random generator is derived (default 0)"),
    "pipeline": Field("str", doc="the pipeline that runs the spec (default: retrieval)"),
    "grid": Field("any", doc="list of axes: each maps override paths to equal-length lists of values"),
    "extraction": Field("mapping", doc="batch_size, workers, shard_size (ints), executor (local|ray), address, "
                                       "actors: extraction settings"),
}
DEFAULT_PIPELINE = "retrieval"
EXTRACTION_FIELDS = {"batch_size": 1, "workers": 0, "shard_size": 1}  # key -> smallest allowed value
MAX_CELLS = 10_000  # a grid beyond this is a typo, not an experiment
#: key -> largest allowed value: a batch or a shard is held in memory, each worker is a process
EXTRACTION_MAX = {"batch_size": 65536, "workers": 256, "shard_size": 10_000_000}
EXECUTORS = ("local", "ray")  # where extraction shards run (harness.executors)
#: settings of the ray executor only: key -> smallest, largest allowed integer (None: a string)
RAY_FIELDS: dict[str, tuple[int, int] | None] = {"address": None, "actors": (1, 4096)}


@dataclass(frozen=True)
class PartSpec:
    """One ``{name: ..., **params}`` node of a spec. Parameters that are parts hold PartSpecs."""

    kind: str
    name: str
    params: dict[str, Any]
    path: str  # "descriptor", "metrics[1]", "dataset.transform"

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping (nested parts included), as a spec would write it."""
        return {"name": self.name, **{k: _plain(v) for k, v in self.params.items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, PartSpec):
        return value.as_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class Cell:
    """One cell of a grid: the overrides that make it, and the pipeline's validated fields."""

    number: int  # position in the grid (0 for a spec without a grid)
    overrides: dict[str, Any]  # override path -> value
    data: dict[str, Any]  # the resolved mapping of this cell
    seed: int
    extraction: dict[str, Any]
    values: dict[str, Any]  # pipeline field -> PartSpec | list[PartSpec] | plain value | None

    def __getattr__(self, name: str) -> Any:  # cell.dataset, cell.metrics, ... (fields of the pipeline)
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)


@dataclass
class Spec:
    source: str
    data: dict[str, Any]  # the resolved mapping (after overrides, grid included), as stored in results
    task: str
    description: str
    seed: int
    pipeline: str
    cells: list[Cell]
    grid: list[dict[str, list[Any]]] | None = None
    extraction: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return sha256_json(self.data)

    def __getattr__(self, name: str) -> Any:  # a one-cell spec reads like v1: spec.dataset, spec.metrics
        cells = self.__dict__.get("cells") or []
        if len(cells) == 1 and name in cells[0].values:
            return cells[0].values[name]
        raise AttributeError(name)


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

    def mark(self, path: PathT, origin: str) -> None:
        """The node at ``path`` (and everything under it) now comes from ``origin``."""
        for known in [p for p in self.overrides if p[: len(path)] == path]:
            del self.overrides[known]
        self.overrides[path] = origin

    def copy(self) -> "_Locations":
        out = _Locations(self.source)
        out.lines = self.lines  # shared: line numbers never change after parsing
        out.overrides = dict(self.overrides)
        return out


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
    _set(data, path, value, f"--set {path_text}")
    loc.mark(path, f"--set {path_text}")
    return data


def _set(data: Any, path: PathT, value: Any, text: str) -> None:
    """Replace (or add) the node at ``path``; missing mappings on the way are created."""
    parent: Any = data
    for i, key in enumerate(path[:-1]):
        child = _child(parent, key, path[: i + 1], text)
        if child is None:
            child = {}
            _assign(parent, key, child, text)
        parent = child
    _assign(parent, path[-1], value, text)


def _child(parent: Any, key: Any, path: PathT, text: str) -> Any:
    if isinstance(parent, dict):
        return parent.get(key)
    if isinstance(parent, list) and isinstance(key, int):
        if key < len(parent):
            return parent[key]
        raise UserError(f"{text}: index {key} out of range at {dotted(path)} (length {len(parent)})")
    raise UserError(f"{text}: {dotted(path[:-1]) or 'the spec'} is not a mapping or list")


def _assign(parent: Any, key: Any, value: Any, text: str) -> None:
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list) and isinstance(key, int) and key <= len(parent):
        if key == len(parent):
            parent.append(value)
        else:
            parent[key] = value
    else:
        raise UserError(f"{text}: cannot set {key!r} here")


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

    common = _common(data, issue)
    pipeline = _pipeline(common.get("pipeline", DEFAULT_PIPELINE), registry, issue)
    if pipeline is None:
        raise SpecError(issues)

    grid = data.get("grid")
    cell_overrides = _grid_cells(grid, loc, issue) if grid is not None else [[]]
    base = {k: v for k, v in data.items() if k != "grid"}
    cells: list[Cell] = []
    seen: set[str] = {str(i) for i in issues}
    for index, overrides in enumerate(cell_overrides):
        cell_data = copy.deepcopy(base) if overrides else base
        cell_loc = loc
        if overrides:
            cell_loc = loc.copy()
            for path, value, origin in overrides:
                try:
                    _set(cell_data, path, copy.deepcopy(value), dotted(path))
                except UserError as exc:
                    issues.append(SpecIssue(origin, "", str(exc)))
                    continue
                cell_loc.mark(path, origin)
        cell_issues: list[SpecIssue] = []
        allowed = {**COMMON_FIELDS, **pipeline.fields}
        for key in cell_data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                cell_issues.append(SpecIssue(cell_loc.of((key,)), dotted((key,)), "unknown key", close[0] if close else None))
        values = _pipeline_fields(cell_data, pipeline, cell_loc, cell_issues, registry)
        for i in cell_issues:  # a problem outside the grid's overrides is the same in every cell: once
            if str(i) not in seen:
                seen.add(str(i))
                issues.append(i)
        cell_common = _common(cell_data, lambda *a, **k: None) if overrides else common
        cells.append(Cell(index, {dotted(p): v for p, v, _ in overrides}, cell_data, cell_common.get("seed", 0),
                          cell_common.get("extraction", {}), values))
    if issues:
        raise SpecError(issues)
    return Spec(source=loc.source, data=data, task=common["task"], description=common.get("description", ""),
                seed=common.get("seed", 0), pipeline=common.get("pipeline", DEFAULT_PIPELINE), cells=cells,
                grid=grid, extraction=common.get("extraction", {}))


def _common(data: dict[str, Any], issue: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rule in COMMON_FIELDS.items():
        if key not in data:
            if rule.required:
                issue((), f"missing required key {key!r}")
            continue
        value = data[key]
        if key == "task" and isinstance(value, str) and value.strip() and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", value):
            issue((key,), "task names use letters, digits, '_', '.', '+', '-' (they name result files)")
        elif key == "extraction":
            value = _extraction(value, (key,), issue) if value is not None else {}
        elif rule.kind != "any" and not _plain_ok(rule, value, (key,), issue):
            continue
        out[key] = value
    return out


def _plain_ok(rule: Field, value: Any, path: PathT, issue: Any) -> bool:
    """Check a non-part field's type; reports and returns False on a mismatch."""
    if rule.kind == "str":
        if not isinstance(value, str) or not value.strip():
            issue(path, f"expected a non-empty string, got {_short(value)}")
            return False
    elif rule.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            issue(path, f"expected an integer, got {_short(value)}")
            return False
    elif rule.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            issue(path, f"expected a number, got {_short(value)}")
            return False
    elif rule.kind == "bool":
        if not isinstance(value, bool):
            issue(path, f"expected true or false, got {_short(value)}")
            return False
    elif rule.kind == "mapping":
        if not isinstance(value, dict):
            issue(path, f"expected a mapping, got {type(value).__name__}")
            return False
    return True


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pipeline(name: Any, registry: Any, issue: Any) -> Any:
    if not isinstance(name, str):
        return None
    if name not in registry.parts["pipeline"]:
        issue(("pipeline",), registry.unknown_message("pipeline", name, hint=False), registry.suggestion("pipeline", name))
        return None
    try:
        return registry.create("pipeline", name, {})
    except UserError as exc:
        issue(("pipeline",), str(exc))
        return None


def _grid_cells(grid: Any, loc: _Locations, issue: Any) -> list[list[tuple[PathT, Any, str]]]:
    """The grid's cells: axes crossed, paths within an axis zipped. Each override carries its origin
    (``spec.yaml:14 grid[0] value 3``) so that a cell's errors say which value made them."""
    if not isinstance(grid, list) or not grid:
        issue(("grid",), "expected a non-empty list of axes (mappings of override path -> list of values)")
        return [[]]
    axes: list[list[list[tuple[PathT, Any, str]]]] = []
    for a, axis in enumerate(grid):
        if not isinstance(axis, dict) or not axis:
            issue(("grid", a), "an axis is a mapping of override paths to lists of values")
            return [[]]
        lengths = set()
        columns = []
        for path_text, values in axis.items():
            try:
                path = parse_path(str(path_text))
            except UserError as exc:
                issue(("grid", a, path_text), str(exc).replace("--set: ", ""))
                return [[]]
            if path[0] in ("grid", "task", "pipeline"):
                issue(("grid", a, path_text), f"{path[0]!r} cannot vary within a run")
                return [[]]
            if isinstance(values, dict) and set(values) == {"values_from"}:  # a published grid, kept in its own file
                values = _values_from(values["values_from"], loc, ("grid", a, path_text), issue)
                if values is None:
                    return [[]]
                grid[a][path_text] = values  # the resolved spec (and its hash) holds the values themselves
            if not isinstance(values, list) or not values:
                issue(("grid", a, path_text), "expected a non-empty list of values (or {values_from: FILE})")
                return [[]]
            lengths.add(len(values))
            columns.append((path_text, path, values))
        if len(lengths) > 1:
            issue(("grid", a), f"lists of one axis are zipped and must have equal lengths, got {sorted(lengths)}")
            return [[]]
        n = lengths.pop()
        axes.append([[(path, values[j], f"{loc.of(('grid', a, path_text, j))} grid[{a}] value {j}")
                      for path_text, path, values in columns] for j in range(n)])
    total = 1
    for axis in axes:
        total *= len(axis)
    if total > MAX_CELLS:
        issue(("grid",), f"the grid has {total} cells (at most {MAX_CELLS})")
        return [[]]
    cells: list[list[tuple[PathT, Any, str]]] = [[]]
    for axis in axes:
        cells = [cell + value for cell in cells for value in axis]
    return cells


def _values_from(ref: Any, loc: _Locations, path: PathT, issue: Any) -> list[Any] | None:
    """The values of a grid file's only axis (``specs/grids/*.yaml``), relative to the spec's folder."""
    if not isinstance(ref, str) or not ref.strip():
        issue(path, "values_from: expected the path of a grid file")
        return None
    file = Path(os.path.expanduser(ref))
    if not file.is_absolute():
        file = Path(loc.source).resolve().parent / file
    try:
        text = safe_yaml.read_text(file)
        data, _, problems = _read_yaml(text, str(file))
    except UserError as exc:
        issue(path, f"values_from: {exc}")
        return None
    axes = data.get("grid") if isinstance(data, dict) else None
    if problems or not isinstance(axes, list) or len(axes) != 1 or not isinstance(axes[0], dict) or len(axes[0]) != 1:
        issue(path, f"values_from: {file} must hold `grid:` with one axis of one path")
        return None
    (values,) = axes[0].values()
    return values


def _pipeline_fields(data: dict[str, Any], pipeline: Any, loc: _Locations, issues: list[SpecIssue],
                     registry: Any) -> dict[str, Any]:
    def issue(path: PathT, message: str, suggestion: str | None = None) -> None:
        issues.append(SpecIssue(loc.of(path), dotted(path), message, suggestion))

    values: dict[str, Any] = {}
    input_type = getattr(pipeline, "metric_input", None)
    for key, rule in pipeline.fields.items():
        value = data.get(key)
        path = (key,)
        if value is None:
            if rule.required:
                issue((), f"missing required key {key!r}")
            values[key] = [] if rule.kind == "parts" else None
            continue
        if rule.kind == "part":
            values[key] = _part(value, path, rule.part_kind, registry, issue)
        elif rule.kind in ("parts", "chain"):
            if rule.kind == "chain" and not isinstance(value, list):
                values[key] = [_part(value, path, rule.part_kind, registry, issue)]
            elif not isinstance(value, list):
                issue(path, f"expected a list of {rule.part_kind} mappings, got {type(value).__name__}")
                continue
            else:
                if rule.required and not value:
                    issue(path, f"at least one {rule.part_kind} is required")
                values[key] = [_part(v, path + (i,), rule.part_kind, registry, issue) for i, v in enumerate(value)]
        elif _plain_ok(rule, value, path, issue):
            problems = list(rule.check(value)) if rule.check is not None else []
            for sub, message, suggestion in problems:
                issue(path + tuple(sub), message, suggestion)
            if not problems:
                values[key] = value
    if input_type is not None and "metrics" in pipeline.fields:
        for ps in values.get("metrics") or []:
            if ps is None:
                continue
            takes = getattr(registry.get("metric", ps.name).factory, "input_type", "retrieval")
            produced = (input_type,) if isinstance(input_type, str) else tuple(input_type)
            if takes not in produced:
                issue(_parse_dotted(ps.path), f"metric {ps.name!r} takes {takes!r} input; the "
                      f"{data.get('pipeline', DEFAULT_PIPELINE)!r} pipeline produces "
                      f"{' or '.join(repr(t) for t in produced)}")
    return values


def _parse_dotted(path: str) -> PathT:
    return parse_path(path) if path else ()


def _part(value: Any, path: PathT, kind: str, registry: Any, issue: Any) -> PartSpec | None:
    if isinstance(value, str):  # shorthand: `descriptor: gist`
        value = {"name": value}
    if not isinstance(value, dict):
        issue(path, f"expected a mapping with a 'name' (a {kind}), got {type(value).__name__}")
        return None
    name = value.get("name")
    if not isinstance(name, str):
        issue(path, f"missing 'name' of the {kind}" if name is None else f"'name' must be a string, got {_short(name)}")
        return None
    params = {k: _expand_home(v) for k, v in value.items() if k != "name"}
    if name not in registry.parts[kind]:
        issue(path + ("name",), registry.unknown_message(kind, name, hint=False), registry.suggestion(kind, name))
        return None
    factory = registry.get(kind, name).factory
    clean, problems = check_params(factory, params)
    for p in problems:
        where = path + ((p.param,) if p.param and p.param in value else ())
        label = f"{kind} {name!r}: parameter {p.param!r}" if p.param else f"{kind} {name!r}"
        issue(where, f"{label}: {p.message}", p.suggestion)
    for param, (ref, default) in part_params(factory).items():  # nested parts, validated recursively
        given = param in params
        raw = params[param] if given else default
        if raw is None or raw is inspect.Parameter.empty:
            continue
        sub = path + (param,) if given else path
        if ref.many:
            if not isinstance(raw, list):
                raw = [raw]
            clean[param] = [_part(v, sub + (i,), ref.kind, registry, issue) for i, v in enumerate(raw)]
        else:
            clean[param] = _part(raw, sub, ref.kind, registry, issue)
    return PartSpec(kind, name, clean, dotted(path))


def _extraction(value: Any, path: PathT, issue: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        issue(path, f"expected a mapping, got {type(value).__name__}")
        return {}
    out: dict[str, Any] = {}
    known = [*EXTRACTION_FIELDS, "executor", *RAY_FIELDS]
    for k, v in value.items():
        if k == "executor":
            executor = _executor(v, path + (k,), issue)
            if executor is not None:
                out[k] = executor
        elif k in RAY_FIELDS:
            bounds = RAY_FIELDS[k]
            if bounds is None and not (isinstance(v, str) and v.strip()):
                issue(path + (k,), f"expected a Ray cluster address (host:port, ray://host:port or auto), got {short_repr(v)}")
            elif bounds is not None and (isinstance(v, bool) or not isinstance(v, int) or not bounds[0] <= v <= bounds[1]):
                issue(path + (k,), f"expected an integer from {bounds[0]} to {bounds[1]:,}, got {short_repr(v)}")
            else:
                out[k] = v
        elif k not in EXTRACTION_FIELDS:
            close = difflib.get_close_matches(str(k), known, n=1, cutoff=0.6)
            issue(path + (k,), "unknown key", close[0] if close else None)
        elif isinstance(v, bool) or not isinstance(v, int) or not EXTRACTION_FIELDS[k] <= v <= EXTRACTION_MAX[k]:
            issue(path + (k,), f"expected an integer from {EXTRACTION_FIELDS[k]} to {EXTRACTION_MAX[k]:,}, "
                               f"got {short_repr(v)}")
        else:
            out[k] = v
    if value.get("executor", "local") == "local":  # (an invalid executor is reported once, above)
        for k in RAY_FIELDS:
            if k in out:
                issue(path + (k,), "applies to the ray executor only (add executor: ray)")
                del out[k]
    return out


def _executor(value: Any, path: PathT, issue: Any) -> str | None:
    """``local`` or ``ray``; ``ray`` only where Ray is installed (checked without importing it)."""
    if not isinstance(value, str) or value not in EXECUTORS:
        close = difflib.get_close_matches(str(value), list(EXECUTORS), n=1, cutoff=0.5) if isinstance(value, str) else []
        issue(path, f"unknown executor {short_repr(value)}; one of: {', '.join(EXECUTORS)}", close[0] if close else None)
        return None
    if value == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            issue(path, "the ray executor needs Ray, an optional extra: pip install 'harness[ray]'")
            return None
    return value


def _expand_home(value: Any) -> Any:
    """Strings starting with ``~/`` are paths under the home directory, wherever they appear."""
    if isinstance(value, str) and value.startswith("~/"):
        return os.path.expanduser(value)
    if isinstance(value, dict):
        return {k: _expand_home(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_home(v) for v in value]
    return value
