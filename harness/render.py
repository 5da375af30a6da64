"""Terminal tables for run results and submission scores (rich)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.2f}" if percent else f"{value:.6g}"


def display_of(record: dict[str, Any], name: str) -> str:
    """How a metric wants a value shown (``display`` in its record: name or fnmatch pattern -> format)."""
    from fnmatch import fnmatchcase

    display = record.get("display") or {}
    if name in display:
        return display[name]
    for pattern, fmt in display.items():
        if fnmatchcase(name, pattern):
            return fmt
    return "number"


def format_value(value: Any, display: str, digits: int = 6) -> str:
    if display == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    if display != "percent" and isinstance(value, float):
        return f"{value:.{digits}g}"
    return _fmt(value, percent=display == "percent")


def compact(value: Any) -> str:
    """A short text for an override value: a part mapping as ``name(k=v, ...)``."""
    if isinstance(value, dict) and "name" in value:
        args = ", ".join(f"{k}={compact(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({args})" if args else str(value["name"])
    if isinstance(value, list):
        return " > ".join(compact(v) for v in value)
    return str(value)


def cell_label(cell: dict[str, Any]) -> str:
    overrides = cell.get("overrides") or {}
    return "; ".join(f"{k}={compact(v)}" for k, v in overrides.items()) if overrides else "(spec)"


def render_run(console: Any, doc: dict[str, Any], path: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    stages = Table(title=f"{doc['task']}: stages")
    grid = "cells" in doc and len(doc["cells"]) > 1
    for col in ("stage", "status", "seconds", *(["cells"] if grid else [])):
        stages.add_column(col)
    for s in doc["stages"]:
        color = {"cached": "green", "computed": "yellow"}.get(s["status"], "dim")
        extra = [",".join(map(str, s.get("cells", [])))] if grid else []
        stages.add_row(escape(s["stage"]), f"[{color}]{s['status']}[/{color}]", f"{s['seconds']:.2f}", *extra)
    console.print(stages)
    cells = doc.get("cells") or [{"overrides": {}, "metrics": doc["metrics"]}]
    # one table: cells as rows, metric values as columns
    columns: list[tuple[str, str, str]] = []  # (metric label, value name, display)
    for cell in cells:
        for label, m in cell["metrics"].items():
            for name, value in m["values"].items():
                col = (label, name, display_of(m, name))
                if not isinstance(value, list) and col not in columns:
                    columns.append(col)
    if len(columns) > 8:  # counts repeat in every metric: the document keeps them, the table shows values
        columns = [c for c in columns if c[2] != "integer"] or columns
    if len(cells) == 1:  # one cell: a value per row reads better than one very wide row
        _render_values(console, doc["task"], cells[0]["metrics"])
        if path is not None:
            console.print(f"result: {escape(str(path))}")
        return
    labels = {label for label, _, _ in columns}
    paths = list(dict.fromkeys(k for c in cells for k in (c.get("overrides") or {})))
    table = Table(title=f"{doc['task']}: metrics ({len(cells)} cells)")
    table.add_column("#", justify="right")
    labels_text = [compact(next(iter(c["overrides"].values()))) if len(paths) == 1 else cell_label(c) for c in cells]
    table.add_column(escape(paths[0]) if len(paths) == 1 else "cell", overflow="fold",
                     min_width=min(36, max(len(t) for t in labels_text)))
    for label, name, display in columns:
        head = name if len(labels) == 1 else f"{label}: {name}"
        table.add_column(escape(head + (" (%)" if display == "percent" else "")), justify="right", overflow="fold")
    for number, cell in enumerate(cells):
        row = []
        for label, name, display in columns:
            m = cell["metrics"].get(label)
            row.append(format_value(m["values"].get(name), display, digits=4) if m and name in m["values"] else "")
        table.add_row(str(number), escape(labels_text[number]), *row)
    protocols = sorted({f"{label}: {m['protocol']} v{m['version']}" for c in cells for label, m in c["metrics"].items()})
    table.caption = escape("; ".join(protocols))
    console.print(table)
    if path is not None:
        console.print(f"result: {escape(str(path))}")


def _render_values(console: Any, task: str, metrics: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{task}: metrics")
    for col in ("metric", "protocol", "value name", "value"):
        table.add_column(col)
    for label, m in metrics.items():
        shown = [(n, v) for n, v in m["values"].items() if not isinstance(v, list)]
        for i, (name, value) in enumerate(shown):
            display = display_of(m, name)
            table.add_row(escape(label) if i == 0 else "", escape(f"{m['protocol']} v{m['version']}") if i == 0 else "",
                          escape(name + (" (%)" if display == "percent" else "")), format_value(value, display))
    console.print(table)
    for label, m in metrics.items():
        if m.get("breakdown"):
            _render_breakdown(console, label, m)


def _render_breakdown(console: Any, label: str, m: dict[str, Any]) -> None:
    """Per operation family (queries that went through it), the metric's values."""
    from rich.markup import escape
    from rich.table import Table

    groups = m["breakdown"]
    names = [n for n, v in next(iter(groups.values())).items() if not isinstance(v, list)]
    table = Table(title=f"{label} by operation (queries that went through it)")
    table.add_column("operation")
    for n in names:
        table.add_column(escape(n), justify="right", overflow="fold")
    for group, values in groups.items():
        table.add_row(escape(group), *[format_value(values.get(n), display_of(m, n), digits=4) for n in names])
    console.print(table)


def render_scores(console: Any, track: str, result: dict[str, Any], display: dict[str, str] | None = None) -> None:
    """Nested dicts become one table per group; each value shown as the scorer's ``display`` says
    (value name or pattern -> percent | number | integer; default number)."""
    from rich.markup import escape
    from rich.table import Table

    record = {"display": display or {}}
    flat = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    groups = {k: v for k, v in result.items() if isinstance(v, dict)}
    if flat:
        table = Table(title=f"{track}")
        table.add_column("metric")
        table.add_column("value")
        for k, v in flat.items():
            fmt = display_of(record, k)
            table.add_row(escape(k + (" (%)" if fmt == "percent" else "")), escape(format_value(v, fmt)))
        console.print(table)
    if groups:
        first = next(iter(groups.values()))
        names = [n for n in first if not isinstance(first[n], list)]
        table = Table(title=f"{track}")
        table.add_column("protocol")
        for n in names:
            fmt = display_of(record, n)
            table.add_column(escape(n + (" (%)" if fmt == "percent" else "")))
        for g, values in groups.items():
            table.add_row(escape(g), *[escape(format_value(values.get(n), display_of(record, n))) for n in names])
        console.print(table)


def render_suite(console: Any, runs: list[tuple[dict[str, Any], Path | None]]) -> None:
    """Several runs (a suite): one line per run, then one table with a row per (run, cell) and a
    column per metric value."""
    from rich.markup import escape
    from rich.table import Table

    columns: list[tuple[str, str, str]] = []
    for doc, _ in runs:
        for cell in doc["cells"]:
            for label, m in cell["metrics"].items():
                for name, value in m["values"].items():
                    col = (label, name, display_of(m, name))
                    if not isinstance(value, list) and col not in columns:
                        columns.append(col)
    labels = {label for label, _, _ in columns}

    def short(cell: dict[str, Any]) -> str:  # one override path: its value says it all
        o = cell.get("overrides") or {}
        return compact(next(iter(o.values()))) if len(o) == 1 else cell_label(cell)

    table = Table(title=f"suite of {len(runs)} runs: metrics")
    table.add_column("task", no_wrap=True)
    width = max(len(short(c)) for doc, _ in runs for c in doc["cells"])
    table.add_column("cell", overflow="fold", min_width=min(30, width))
    for label, name, display in columns:
        head = name if len(labels) == 1 else f"{label}: {name}"
        table.add_column(escape(head + (" (%)" if display == "percent" else "")), justify="right", overflow="fold")
    for doc, path in runs:
        statuses = [s["status"] for s in doc["stages"]]
        console.print(f"{escape(doc['task'])}: {len(statuses)} stages ({statuses.count('computed')} computed, "
                      f"{statuses.count('cached')} cached), {doc['duration_s']:.1f} s"
                      + (f", result: {escape(str(path))}" if path is not None else ""))
        for cell in doc["cells"]:
            row = []
            for label, name, display in columns:
                m = cell["metrics"].get(label)
                row.append(format_value(m["values"].get(name), display, digits=4) if m and name in m["values"] else "")
            table.add_row(escape(doc["task"]), escape(short(cell)), *row)
    protocols = sorted({f"{label}: {m['protocol']} v{m['version']}" for doc, _ in runs for c in doc["cells"]
                        for label, m in c["metrics"].items()})
    table.caption = escape("; ".join(protocols))
    console.print(table)
