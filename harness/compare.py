"""``harness compare A B``: metric deltas per cell of two run results, and why they may not compare.

Results compare when they measured the same thing the same way: the same data (fingerprints), each
metric under the same protocol, version and parameters, and the same grid (cells matched by their
overrides). Anything else is a problem; the CLI refuses unless ``--force``, which flags it.
"""

from __future__ import annotations

import json
from typing import Any

from harness.documents import flatten
from harness.render import cell_label


def _fingerprints(doc: dict[str, Any]) -> list[tuple[str, str]]:
    data = doc.get("data") or {}
    views = data.get("datasets", [data]) if isinstance(data, dict) else []
    return [(str(v.get("dataset")), str(v.get("fingerprint"))) for v in views if isinstance(v, dict)]


def _key(cell: dict[str, Any]) -> str:
    return json.dumps(cell.get("overrides") or {}, sort_keys=True)


def compare_documents(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    notes: list[str] = []
    fa, fb = _fingerprints(a), _fingerprints(b)
    if fa != fb:
        problems.append("different data: " + ", ".join(f"{d} {f[:12]}" for d, f in fa) + " vs "
                        + ", ".join(f"{d} {f[:12]}" for d, f in fb))
    if a.get("task") != b.get("task"):
        notes.append(f"tasks differ: {a.get('task')} vs {b.get('task')}")
    cells_a = {_key(c): c for c in a["cells"]}
    cells_b = {_key(c): c for c in b["cells"]}
    only_a = [cell_label(c) for k, c in cells_a.items() if k not in cells_b]
    only_b = [cell_label(c) for k, c in cells_b.items() if k not in cells_a]
    if only_a or only_b:
        problems.append("different grid: " + "; ".join(
            [f"{len(only_a)} cell(s) only in A ({', '.join(only_a[:3])}{', ...' if len(only_a) > 3 else ''})"] * bool(only_a)
            + [f"{len(only_b)} cell(s) only in B ({', '.join(only_b[:3])}{', ...' if len(only_b) > 3 else ''})"] * bool(only_b)))
    cells = []
    seen_metric_problems: set[str] = set()
    for key, ca in cells_a.items():
        cb = cells_b.get(key)
        if cb is None:
            continue
        metrics: dict[str, dict[str, dict[str, float | None]]] = {}
        for label in dict.fromkeys([*ca["metrics"], *cb["metrics"]]):
            ma, mb = ca["metrics"].get(label), cb["metrics"].get(label)
            if ma is None or mb is None:
                msg = f"metric {label} only in {'A' if mb is None else 'B'}"
                if msg not in seen_metric_problems:
                    seen_metric_problems.add(msg)
                    problems.append(msg)
                continue
            for what in ("protocol", "version", "params"):
                if ma.get(what) != mb.get(what):
                    msg = f"metric {label}: {what} {_short(ma.get(what))} vs {_short(mb.get(what))}"
                    if msg not in seen_metric_problems:
                        seen_metric_problems.add(msg)
                        problems.append(msg)
            va, vb = flatten(ma.get("values") or {}), flatten(mb.get("values") or {})
            metrics[label] = {n: {"a": va.get(n), "b": vb.get(n), "delta": _delta(va.get(n), vb.get(n))}
                              for n in dict.fromkeys([*va, *vb])}
        cells.append({"overrides": ca.get("overrides") or {}, "label": cell_label(ca), "metrics": metrics})
    return {"a": _summary(a), "b": _summary(b), "problems": problems, "notes": notes, "cells": cells,
            "only_a": only_a, "only_b": only_b}


def _short(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else v


def _delta(x: Any, y: Any) -> float | None:
    if x is None or y is None:
        return None
    return float(y) - float(x)


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    return {"task": doc.get("task"), "created": doc.get("created"), "spec_hash": spec.get("hash"),
            "overrides": spec.get("overrides"), "data": _fingerprints(doc), "cells": len(doc["cells"])}


def render_comparison(console: Any, result: dict[str, Any], path_a: str, path_b: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from harness.render import format_value

    table = Table(title=escape(f"B - A  (A: {path_a}, B: {path_b})"))
    multi = len(result["cells"]) > 1
    if multi:
        table.add_column("cell", overflow="fold")
    for col in ("metric", "value", "A", "B", "B - A"):
        table.add_column(col, justify="right" if col in ("A", "B", "B - A") else "left")
    for cell in result["cells"]:
        for label, values in cell["metrics"].items():
            for name, v in values.items():
                d = v["delta"]
                color = "" if d is None or d == 0 else ("green" if d > 0 else "red")
                delta = format_value(d, "number", 4) if d is not None else "n/a"
                if d is not None and d > 0:
                    delta = "+" + delta
                table.add_row(*([escape(cell["label"])] if multi else []), escape(label), escape(name),
                              format_value(v["a"], "number", 4), format_value(v["b"], "number", 4),
                              f"[{color}]{delta}[/{color}]" if color else delta)
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {escape(note)}")
