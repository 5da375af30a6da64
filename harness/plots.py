"""Charts of the report as inline SVG strings, drawn with matplotlib (imported here, lazily: only
``harness report`` pays for it).

SVG keeps a chart to ~10-30 kB, vector-sharp and text-selectable, with no script and no network
(plotly's offline bundle is 4.8 MB, an inline Vega-Lite page 0.9 MB). Each SVG gets its own id salt,
so that several inline SVGs in one page never share clip-path or marker ids.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

#: Colour-blind-safe cycle (Okabe-Ito), then matplotlib's tab10 for more series.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
          "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_counter = itertools.count()


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float | None]
    style: str = "-"  # matplotlib line style; "step" draws a post-step PR curve


@dataclass
class Panel:
    title: str
    xlabel: str
    series: list[Series] = field(default_factory=list)
    log_x: bool = False
    reference: float | None = None  # a horizontal dashed line (e.g. the unattacked value)
    reference_label: str | None = None
    series_references: list[float | None] = field(default_factory=list)  # per series, dashed in its colour


def text(s: Any, limit: int = 60) -> str:
    """A label for matplotlib: shortened, and with ``$`` escaped (it would start mathtext, whose parser
    fails on arbitrary user strings)."""
    s = str(s)
    if len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return s.replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10,
                                "axes.spines.top": False, "axes.spines.right": False})
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": f"harness-report-{next(_counter)}", "svg.fonttype": "none"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the SVG goes inline in HTML


def _percent_axis(ax: Any, percent: bool) -> None:
    if percent:
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}"))


def pr_curves(series: Sequence[Series], title: str) -> str:
    """Precision against recall, one step curve per series (points at the true positives)."""
    fig = _figure(5.4, 3.6 + 0.16 * ((len(series) + 1) // (2 if len(series) > 3 else 1)) * (len(series) > 1))
    ax = fig.add_subplot()
    for i, s in enumerate(series):  # 8 colours, then the same colours dashed, then dotted
        ax.step(s.x, s.y, where="post", color=COLORS[i % 8], linestyle=("-", "--", ":")[(i // 8) % 3],
                linewidth=1.4, label=text(s.label, 48))
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(text(title, 90))
    ax.grid(alpha=0.3)
    ax.axhline(0.9, color="#999999", linewidth=0.8, linestyle=":")  # R@P90 reads off this line
    if len(series) > 1:  # below the axes: curves fill the lower left when a cell fails
        fig.legend(loc="outside lower center", ncols=2 if len(series) > 3 else 1, fontsize=7, frameon=False)
    return to_svg(fig)


def panels(panels_: Sequence[Panel], ylabel: str, percent: bool, title: str) -> str:
    """Small multiples sharing the y axis: one panel per family (each its own x axis and unit)."""
    n = len(panels_)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = _figure(min(2.6 * cols + 0.6, 11.0), 2.3 * rows + 0.5)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    legend_done = False
    for i, p in enumerate(panels_):
        ax = axes[i // cols][i % cols]
        for j, s in enumerate(p.series):
            pts = [(x, y) for x, y in zip(s.x, s.y) if y is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], s.style, marker="o", markersize=3.5, linewidth=1.4,
                    color=COLORS[j % len(COLORS)], label="_nolegend_" if s.label == p.title else text(s.label, 40))
        for j, ref in enumerate(p.series_references):
            if ref is not None:
                ax.axhline(ref, color=COLORS[j % len(COLORS)], linewidth=0.9, linestyle="--", alpha=0.7)
        if p.reference is not None:
            ax.axhline(p.reference, color="#666666", linewidth=1, linestyle="--", label=text(p.reference_label or "reference", 40))
        if p.log_x:
            ax.set_xscale("log")
        ax.set_title(text(p.title, 40))
        ax.set_xlabel(text(p.xlabel, 40))
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel(text(ylabel, 40) + (" (%)" if percent else ""))
        _percent_axis(ax, percent)
        if len(p.series) > 1 or (p.reference is not None and not legend_done):
            ax.legend(fontsize=6.5, frameon=False)
            legend_done = True
    for i in range(n, rows * cols):
        axes[i // cols][i % cols].set_visible(False)
    all_y = [y for p in panels_ for s in p.series for y in s.y if y is not None]
    all_y += [p.reference for p in panels_ if p.reference is not None]
    all_y += [r for p in panels_ for r in p.series_references if r is not None]
    if all_y and min(all_y) >= 0 and max(all_y) <= 1:
        axes[0][0].set_ylim(0, 1.02)
    fig.suptitle(text(title, 100), fontsize=10)
    return to_svg(fig)


def bars(labels: Sequence[str], values: Sequence[float | None], xlabel: str, percent: bool, title: str) -> str:
    """Horizontal bars, one per labelled value (missing values drawn as an empty row)."""
    n = len(labels)
    fig = _figure(5.4, 0.8 + 0.24 * n)
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    vals = [0.0 if v is None else float(v) for v in values]
    ax.barh(ys, vals, color=[COLORS[0] if v is not None else "#dddddd" for v in values], height=0.7)
    ax.set_yticks(ys, [text(lb, 44) for lb in labels], fontsize=7.5)
    for y, v in zip(ys, values):
        shown = "n/a" if v is None else (f"{100 * v:.1f}" if percent else f"{v:.4g}")
        ax.text(0 if v is None else float(v), y, " " + shown, va="center", fontsize=7)
    ax.set_xlabel(text(xlabel, 60) + (" (%)" if percent else ""))
    _percent_axis_x(ax, percent)
    if vals and min(vals) >= 0 and max(vals) <= 1:
        ax.set_xlim(0, 1.08)
    ax.set_title(text(title, 90))
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig)


def _percent_axis_x(ax: Any, percent: bool) -> None:
    if percent:
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}"))
