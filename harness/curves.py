"""What a grid's cells can be plotted as, read from their overrides alone (no plugin needed).

- A path whose values are numbers (``index.search.global_top_k: [1000, 4000]``, a lambda) gives a
  parameter curve: value against the number, one series per combination of the other overrides.
- A path whose values are parts (``transform: {name: attack.jpeg, quality: 50}``) gives robustness
  curves: the cells of one part name (the family) whose one numeric parameter varies (the strength,
  here ``quality``) form a curve, value against strength; a family's other parameters that change
  independently of the strength split it into series. ``attack.none`` cells are the reference.
- Cells on no curve of two or more points are "single" (drawn as bars).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

REFERENCE_NAMES = ("attack.none", "none", "identity")


@dataclass
class Curve:
    label: str  # the series: other overrides (and parameters that split the family), or the family
    cells: list[int]  # cell indices, by increasing x
    x: list[float]
    other: str = ""  # the other overrides' label alone (finds the series' reference cell)


@dataclass
class CurveGroup:
    """One panel: curves sharing an x axis."""

    path: str  # the override path
    kind: str  # "parameter" (a number) or "family" (a part's strength parameter)
    title: str
    xlabel: str
    curves: list[Curve] = field(default_factory=list)
    reference: dict[str, int] = field(default_factory=dict)  # other-overrides label -> reference cell


@dataclass
class GridCurves:
    groups: list[CurveGroup]
    single: list[int]  # cells on no curve


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _as_part(v: Any) -> dict[str, Any] | None:
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, dict) and isinstance(v.get("name"), str):
        return v
    return None


def _other_label(overrides: dict[str, Any], path: str) -> str:
    from harness.render import compact

    return "; ".join(f"{k}={compact(v)}" for k, v in overrides.items() if k != path)


def grid_curves(cells: list[dict[str, Any]]) -> GridCurves:
    overrides = [c.get("overrides") or {} for c in cells]
    paths = list(dict.fromkeys(k for o in overrides for k in o))
    groups: list[CurveGroup] = []
    covered: set[int] = set()
    for path in paths:
        if not all(path in o for o in overrides):
            continue
        values = [o[path] for o in overrides]
        if all(_is_number(v) for v in values):
            group = _parameter_group(path, values, overrides)
        elif all(_as_part(v) is not None for v in values):
            group = _family_groups(path, [_as_part(v) for v in values], overrides)  # type: ignore[misc]
        else:
            continue
        for g in group if isinstance(group, list) else [group]:
            if g.curves:
                groups.append(g)
                for c in g.curves:
                    covered.update(c.cells)
                covered.update(g.reference.values())
    single = [i for i in range(len(cells)) if i not in covered or _is_reference_only(i, groups)]
    return GridCurves(groups, single if len(cells) > 1 else [])


def _is_reference_only(i: int, groups: list[CurveGroup]) -> bool:
    return not any(i in c.cells for g in groups for c in g.curves)


def _parameter_group(path: str, values: list[Any], overrides: list[dict[str, Any]]) -> CurveGroup:
    series: dict[str, list[int]] = {}
    for i, o in enumerate(overrides):
        series.setdefault(_other_label(o, path), []).append(i)
    group = CurveGroup(path, "parameter", path, path.rsplit(".", 1)[-1])
    for label, idx in series.items():
        if len({values[i] for i in idx}) < 2:
            continue
        idx = sorted(idx, key=lambda i: values[i])
        group.curves.append(Curve(label or path, idx, [float(values[i]) for i in idx], label))
    return group


def _family_groups(path: str, parts: list[dict[str, Any]], overrides: list[dict[str, Any]]) -> list[CurveGroup]:
    by_family: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        by_family.setdefault(p["name"], []).append(i)
    references = {_other_label(overrides[i], path): i for i, p in enumerate(parts) if p["name"] in REFERENCE_NAMES}
    out = []
    for family, idx in by_family.items():
        if family in REFERENCE_NAMES:
            continue
        params = [k for k in dict.fromkeys(k for i in idx for k in parts[i]) if k != "name"]
        varying = [k for k in params if all(_is_number(parts[i].get(k)) for i in idx)
                   and len({parts[i][k] for i in idx}) > 1]
        if not varying:
            continue
        xk = varying[0]
        # parameters that are a function of the strength (e.g. max_quality = min_quality) do not split
        split = [k for k in params if k != xk and not _function_of(parts, idx, xk, k)]
        series: dict[tuple[str, str], list[int]] = {}
        for i in idx:
            own = ", ".join(f"{k}={json.dumps(parts[i].get(k))}" for k in split)
            series.setdefault((own, _other_label(overrides[i], path)), []).append(i)
        group = CurveGroup(path, "family", family, xk)
        for (own, other), members in series.items():
            if len({parts[i][xk] for i in members}) < 2:
                continue
            members = sorted(members, key=lambda i: parts[i][xk])
            label = "; ".join(s for s in (own, other) if s) or family
            group.curves.append(Curve(label, members, [float(parts[i][xk]) for i in members], other))
        group.reference = {k: v for k, v in references.items()}
        out.append(group)
    return out


def _function_of(parts: list[dict[str, Any]], idx: list[int], xk: str, k: str) -> bool:
    seen: dict[Any, str] = {}
    for i in idx:
        x, v = parts[i].get(xk), json.dumps(parts[i].get(k), sort_keys=True)
        if seen.setdefault(x, v) != v:
            return False
    return True
