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


def render_run(console: Any, doc: dict[str, Any], path: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    stages = Table(title=f"{doc['task']}: stages")
    for col in ("stage", "status", "seconds"):
        stages.add_column(col)
    for s in doc["stages"]:
        color = {"cached": "green", "computed": "yellow"}.get(s["status"], "dim")
        stages.add_row(escape(s["stage"]), f"[{color}]{s['status']}[/{color}]", f"{s['seconds']:.2f}")
    console.print(stages)
    metrics = Table(title=f"{doc['task']}: metrics")
    for col in ("metric", "protocol", "value name", "value"):
        metrics.add_column(col)
    for label, m in doc["metrics"].items():
        for i, (name, value) in enumerate(m["values"].items()):
            if isinstance(value, list):
                continue
            metrics.add_row(escape(label) if i == 0 else "", escape(f"{m['protocol']} v{m['version']}") if i == 0 else "",
                            escape(name), _fmt(value))
    console.print(metrics)
    if path is not None:
        console.print(f"result: {escape(str(path))}")


def render_scores(console: Any, track: str, result: dict[str, Any]) -> None:
    """Nested dicts become one table per group; fractions in [0, 1] are shown as percentages."""
    from rich.markup import escape
    from rich.table import Table

    flat = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    groups = {k: v for k, v in result.items() if isinstance(v, dict)}
    if flat:
        table = Table(title=f"{track}")
        table.add_column("metric")
        table.add_column("value")
        for k, v in flat.items():
            pct = isinstance(v, float) and 0.0 <= v <= 1.0 and not k.startswith(("threshold", "n_"))
            table.add_row(escape(k + (" (%)" if pct else "")), escape(_fmt(v, pct)))
        console.print(table)
    if groups:
        names = [n for n in next(iter(groups.values())) if not isinstance(next(iter(groups.values()))[n], list)]
        table = Table(title=f"{track} (%)")
        table.add_column("protocol")
        for n in names:
            table.add_column(n)
        for g, values in groups.items():
            table.add_row(g, *[_fmt(values.get(n), True) for n in names])
        console.print(table)
