"""``harness report``: one static HTML file of result documents (and a leaderboard), readable offline.

No script and no external resource: inline CSS, inline SVG charts (:mod:`harness.plots`), and a
Content-Security-Policy that forbids anything else, so a hostile string in a document can neither run
nor fetch. Every string from a document is HTML-escaped (matplotlib escapes the text it writes into
SVG; labels are also freed of mathtext ``$``).
"""

from __future__ import annotations

import json
import os
import time
from html import escape
from pathlib import Path
from typing import Any, Iterable

from harness.cache import atomic_write_bytes
from harness.documents import flatten, main_value_name
from harness.render import cell_label, compact, display_of, format_value

MAX_PR_SERIES = 16  # 8 colours x 2 line styles; more curves on one chart are unreadable
MAX_CURVE_POINTS = 1000  # per drawn curve (the metric stores <= 200; a foreign document may hold more)
MAX_PANELS = 16  # attack families drawn
MAX_BARS = 60  # bars on one chart
MAX_METRICS = 12  # metrics charted per document (the table lists them all)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#17324d;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.8}main{padding:8px 32px 40px;max-width:1200px}
section.doc,section.board,section.suite{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 20px 16px;margin:18px 0}
h2{font-size:18px;margin:12px 0 6px}h3{font-size:15px;margin:16px 0 6px;color:#333}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.main{font-weight:700}code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.prov dt{color:#555}dl.prov dd{margin:0;word-break:break-all}
figure.chart{margin:10px 18px 16px 0;display:inline-block;vertical-align:top;max-width:100%}
figure.chart svg{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#555;max-width:520px}caption{text-align:left;padding:2px 0}
details summary{cursor:pointer;color:#17324d}.warn{color:#a33}.dim{color:#777}
nav a{margin-right:12px}div.scroll{overflow-x:auto;max-width:100%}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


class Html:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.charts = 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, tag: str, s: Any, cls: str | None = None) -> None:
        c = f' class="{cls}"' if cls else ""
        self.add(f"<{tag}{c}>{escape(str(s))}</{tag}>")

    def table(self, head: list[str], rows: Iterable[list[tuple[str, str]]], caption: str | None = None) -> None:
        """``rows`` of (text, css class) cells; every text is escaped here."""
        out = ['<div class="scroll"><table>']  # a wide table scrolls inside its section, not the page
        if caption:
            out.append(f"<caption class=dim>{escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(f'<td class="{c}">{escape(t)}</td>' if c else f"<td>{escape(t)}</td>"
                                        for t, c in row) + "</tr>")
        out.append("</table></div>")
        self.add("".join(out))

    def chart(self, kind: str, svg: str, caption: str) -> None:
        self.charts += 1
        self.add(f'<figure class="chart" data-chart="{escape(kind)}" id="chart-{self.charts}">{svg}'
                 f"<figcaption>{escape(caption)}</figcaption></figure>")


def write_report(output: str | os.PathLike[str], docs: list[tuple[str, dict[str, Any]]],
                 boards: list[dict[str, Any]] | None = None, title: str | None = None) -> int:
    """Write the report; returns its size in bytes."""
    html = Html()
    title = title or ("harness report: " + ", ".join(dict.fromkeys(d["task"] for _, d in docs)) if docs else "harness leaderboard")
    import harness

    html.add("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
             '<meta name=viewport content="width=device-width,initial-scale=1">'
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>")
    html.add(f"<header><h1>{escape(title)}</h1><p>{len(docs)} result document(s)"
             + (f", {sum(len(b['rows']) for b in boards)} leaderboard row(s)" if boards else "")
             + f" &middot; written {escape(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))} by harness "
             f"{escape(harness.__version__)}</p></header><main>")
    if len(docs) > 1:
        _nav(html, docs, boards)
        _suite(html, docs)
    if boards:
        _boards(html, boards)
    for n, (path, doc) in enumerate(docs):
        _document(html, n, path, doc)
    html.add("</main></body></html>\n")
    data = "".join(html.parts).encode("utf-8")
    atomic_write_bytes(Path(output), data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(output, 0o666 & ~umask)  # a report is for sharing (the atomic write creates it private)
    return len(data)


# ------------------------------------------------------------------------------------------- pieces


def _nav(html: Html, docs: list[tuple[str, dict[str, Any]]], boards: Any) -> None:
    links = [f'<a href="#doc-{n}">{escape(d["task"])}</a>' for n, (_, d) in enumerate(docs)]
    if boards:
        links.insert(0, '<a href="#leaderboard">leaderboard</a>')
    html.add("<nav>" + "".join(links) + "</nav>")


def _main_of(record: dict[str, Any]) -> str | None:
    return main_value_name(record, flatten(record.get("values") or {}))


def _suite(html: Html, docs: list[tuple[str, dict[str, Any]]]) -> None:
    """One table over every document's cells: the main value of each metric."""
    html.add('<section class="suite"><h2>Suite</h2>')
    cols: list[tuple[str, str]] = []
    for _, doc in docs:
        for cell in doc["cells"]:
            for label, m in cell["metrics"].items():
                main = _main_of(m)
                if main and (label, main) not in cols:
                    cols.append((label, main))
    rows = []
    for _, doc in docs:
        fp = str((doc.get("data") or {}).get("fingerprint") or "")[:12]
        for cell in doc["cells"]:
            row = [(doc["task"], ""), (cell_label(cell), ""), (fp, "dim")]
            for label, main in cols:
                m = cell["metrics"].get(label)
                v = (m or {}).get("values", {}).get(main) if m else None
                row.append((format_value(v, display_of(m or {}, main), 4) if m else "", "num"))
            rows.append(row)
    html.table(["task", "cell", "data", *[f"{lb}: {mn}" for lb, mn in cols]], rows,
               caption="main value of each metric (as the metric declares it)")
    html.add("</section>")


def _boards(html: Html, boards: list[dict[str, Any]]) -> None:
    html.add('<section class="board" id="leaderboard"><h2>Leaderboard</h2>')
    from harness import plots

    for bd in boards:
        rows_ = bd["rows"]
        html.text("h3", f"{bd['track']} [{bd['mode']}]" + (f" · data {bd['data'][:12]}" if bd["data"] else ""))
        columns = list(dict.fromkeys(c for r in rows_ for c in r["columns"]))
        display = {"display": rows_[0]["display"] if rows_ else {}}
        main = bd["main_metric"] or "main"
        main_fmt = display_of(display, main.split(" (")[0])
        head = ["#", "name", main + (" (%)" if main_fmt == "percent" else "")]
        head += [c + (" (%)" if display_of(display, c) == "percent" else "") for c in columns]
        head += ["file sha256", "added"]
        rows = []
        for r in rows_:
            rows.append([("" if r["rank"] is None else str(r["rank"]), "num"), (f"{r['name']} v{r['version']}", ""),
                         (format_value(r["main_value"], main_fmt, 4), "num main"),
                         *[(format_value(r["values"].get(c), display_of(display, c), 4), "num") for c in columns],
                         (r["sha256"][:12], "dim"), (r["created"], "dim")])
        html.table(head, rows)
        series = []
        for r in rows_:
            curve = _board_pr_curve(r.get("document") or {}, r["kind"])
            if curve:
                series.append(_pr_series(f"{r['rank'] or '-'}. {r['name']} v{r['version']}", curve))
        if series:
            shown = series[:MAX_PR_SERIES]
            html.chart("pr", plots.pr_curves(shown, f"{bd['track']}: precision-recall, every submission"),
                       "Precision against recall of each submission (points at the true positives, "
                       "pessimistic ties); dotted: precision 0.9." + _more(series, shown))
    html.add("</section>")


def _board_pr_curve(doc: dict[str, Any], kind: str) -> list[Any] | None:
    if kind == "score":
        curve = (doc.get("result") or {}).get("pr_curve")
    else:
        cells = doc.get("cells") or []
        metrics = cells[0].get("metrics", {}) if cells and isinstance(cells[0], dict) else {}
        curve = next((m.get("values", {}).get("pr_curve") for m in metrics.values()
                      if isinstance(m, dict) and isinstance(m.get("values"), dict) and "pr_curve" in m["values"]), None)
    return curve if _valid_curve(curve) else None


def _valid_curve(curve: Any) -> bool:
    return (isinstance(curve, list) and len(curve) > 0 and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
        for p in curve))


def _pr_series(label: str, curve: list[list[float]]) -> Any:
    from harness.plots import Series

    if len(curve) > MAX_CURVE_POINTS:
        step = len(curve) / MAX_CURVE_POINTS
        curve = [curve[int(i * step)] for i in range(MAX_CURVE_POINTS)] + [curve[-1]]
    # the step curve starts at recall 0 with the first point's precision
    xs = [0.0] + [float(r) for r, _ in curve]
    ys = [float(curve[0][1])] + [float(p) for _, p in curve]
    return Series(label, xs, ys)


def _more(all_: list[Any], shown: list[Any]) -> str:
    return f" The first {len(shown)} of {len(all_)} are drawn." if len(all_) > len(shown) else ""


def _document(html: Html, n: int, path: str, doc: dict[str, Any]) -> None:
    cells = doc["cells"]
    html.add(f'<section class="doc" id="doc-{n}">')
    html.text("h2", f"{doc['task']}" + (f" — grid of {len(cells)} cells" if len(cells) > 1 else ""))
    description = ((doc.get("spec") or {}).get("resolved") or {}).get("description")
    if description:
        html.text("p", description)
    spec, src = doc.get("spec") or {}, doc.get("harness_source") or {}
    commit = src.get("git_commit")
    html.text("p", f"{spec.get('source', '?')} · data {str((doc.get('data') or {}).get('fingerprint') or '?')[:12]} · "
                   f"harness {doc.get('harness_version', '?')}" + (f" {str(commit)[:12]}" if commit else "")
                   + f" · {doc.get('created', '?')}", cls="dim")
    _metric_tables(html, doc)
    _charts(html, doc)
    html.text("h3", "Provenance")
    _provenance(html, path, doc)
    html.add("</section>")


def _provenance(html: Html, path: str, doc: dict[str, Any]) -> None:
    spec = doc.get("spec") or {}
    src = doc.get("harness_source") or {}
    data = doc.get("data") or {}
    commit = src.get("git_commit")
    items = [
        ("result file", path),
        ("created", f"{doc.get('created', '?')} ({doc.get('duration_s', '?')} s)"),
        ("pipeline", doc.get("pipeline", "retrieval")),
        ("spec", f"{spec.get('source', '?')} · hash {str(spec.get('hash', ''))[:16]}"),
        ("overrides", " ".join(f"--set {o}" for o in spec.get("overrides") or []) or "none"),
        ("harness", f"{doc.get('harness_version', '?')}"
         + (f" · commit {commit[:12]}{' (dirty tree)' if src.get('dirty') else ''}" if commit else " · no git commit recorded")),
    ]
    for view in data.get("datasets", [data]) if isinstance(data, dict) else []:
        if isinstance(view, dict):
            counts = ", ".join(f"{k} {v}" for k, v in (view.get("counts") or {}).items())
            items.append((f"data: {view.get('dataset', '?')}", f"fingerprint {view.get('fingerprint', '?')} · {counts}"))
    env = doc.get("environment") or {}
    items.append(("environment", f"python {env.get('python', '?')} · {env.get('platform', '?')} · "
                                 f"{env.get('cpu_count', '?')} CPUs"))
    html.add('<dl class="prov">' + "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in items) + "</dl>")
    plugins = [p for p in doc.get("plugins") or [] if isinstance(p, dict)]
    if plugins:
        html.add("<details><summary>plugins and versions</summary>")
        html.table(["part", "plugin", "package", "package version", "part version"],
                   [[(str(p.get(k, "")), "") for k in ("part", "plugin", "package", "package_version", "version")]
                    for p in plugins])
        html.add("</details>")
    stages = [s for s in doc.get("stages") or [] if isinstance(s, dict)]
    if stages:
        html.add(f"<details><summary>{len(stages)} stages</summary>")
        html.table(["stage", "status", "seconds", "cells"],
                   [[(str(s.get("stage", "")), ""), (str(s.get("status", "")), ""),
                     (f"{s.get('seconds', 0):.2f}" if isinstance(s.get("seconds"), (int, float)) else "", "num"),
                     (",".join(map(str, s.get("cells", []))) if isinstance(s.get("cells"), list) else "", "")]
                    for s in stages])
        html.add("</details>")
    if spec.get("resolved") is not None:
        html.add("<details><summary>resolved spec</summary><pre>"
                 + escape(json.dumps(spec["resolved"], indent=2)) + "</pre></details>")


def _metric_tables(html: Html, doc: dict[str, Any]) -> None:
    cells = doc["cells"]
    columns: list[tuple[str, str, str]] = []
    for cell in cells:
        for label, m in cell["metrics"].items():
            for name, value in m["values"].items():
                col = (label, name, display_of(m, name))
                if not isinstance(value, (list, dict)) and col not in columns:
                    columns.append(col)
    labels = {label for label, _, _ in columns}
    head = ["#", "cell"] + [(n if len(labels) == 1 else f"{lb}: {n}") + (" (%)" if d == "percent" else "")
                            for lb, n, d in columns]
    rows = []
    for i, cell in enumerate(cells):
        row = [(str(i), "num"), (cell_label(cell), "")]
        for label, name, d in columns:
            m = cell["metrics"].get(label)
            main = _main_of(m) if m else None
            row.append((format_value(m["values"].get(name), d, 4) if m and name in m["values"] else "",
                        "num main" if name == main else "num"))
        rows.append(row)
    protocols = sorted({f"{label}: {m.get('protocol', '?')} v{m.get('version', '?')}" for c in cells
                        for label, m in c["metrics"].items()})
    html.text("h3", "Metrics")
    html.table(head, rows, caption="; ".join(protocols) + " · bold: the metric's main value")
    if len(cells) == 1:
        for label, m in cells[0]["metrics"].items():
            groups = m.get("breakdown")
            if isinstance(groups, dict) and groups and all(isinstance(g, dict) for g in groups.values()):
                names = [k for k, v in next(iter(groups.values())).items() if not isinstance(v, (list, dict))]
                html.add(f"<details><summary>{escape(label)} by operation ({len(groups)} families)</summary>")
                html.table(["operation"] + [n + (" (%)" if display_of(m, n) == "percent" else "") for n in names],
                           [[(str(g), "")] + [(format_value(vals.get(n), display_of(m, n), 4), "num") for n in names]
                            for g, vals in groups.items()])
                html.add("</details>")


def _short(cell: dict[str, Any]) -> str:
    """A cell's label for charts: the value alone when the grid has one override path."""
    o = cell.get("overrides") or {}
    return compact(next(iter(o.values()))) if len(o) == 1 else cell_label(cell)


def _value(cell: dict[str, Any], label: str, name: str) -> float | None:
    m = cell["metrics"].get(label)
    v = (m or {}).get("values", {}).get(name) if m else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _charts(html: Html, doc: dict[str, Any]) -> None:
    from harness import plots
    from harness.curves import grid_curves

    cells = doc["cells"]
    labels = list(dict.fromkeys(label for c in cells for label in c["metrics"]))[:MAX_METRICS]
    curves = grid_curves(cells)
    out: list[tuple[str, str, str]] = []
    for label in labels:
        record = next(c["metrics"][label] for c in cells if label in c["metrics"])
        # precision-recall curves, one per cell
        series = [c for c in cells if label in c["metrics"] and _valid_curve(c["metrics"][label]["values"].get("pr_curve"))]
        if series:
            shown = [_pr_series(_short(c) if len(cells) > 1 else doc["task"], c["metrics"][label]["values"]["pr_curve"])
                     for c in series[:MAX_PR_SERIES]]
            out.append(("pr", plots.pr_curves(shown, f"{doc['task']}: {label} precision-recall"),
                        f"{label}: precision against recall"
                        + (" per cell" if len(cells) > 1 else "") + " (points at the true positives, pessimistic "
                        "ties); dotted: precision 0.9." + _more(series, shown)))
        main = _main_of(record)
        if main is None:
            continue
        percent = display_of(record, main) == "percent"
        all_fam = [g for g in curves.groups if g.kind == "family"]
        fam = all_fam[:MAX_PANELS]
        if fam:
            panels = []
            for g in fam:
                p = plots.Panel(g.title, g.xlabel)
                for c in g.curves:
                    p.series.append(plots.Series(c.label, c.x, [_value(cells[i], label, main) for i in c.cells]))
                if len(g.reference) == 1:
                    ref = next(iter(g.reference.values()))
                    p.reference, p.reference_label = _value(cells[ref], label, main), "no attack"
                elif g.reference:  # one unattacked cell per series (e.g. per watermarker)
                    p.series_references = [_value(cells[g.reference[c.other]], label, main) if c.other in g.reference
                                           else None for c in g.curves]
                panels.append(p)
            out.append(("robustness", plots.panels(panels, main, percent, f"{label}: {main} against attack strength"),
                        f"Robustness: {label} {main} against each family's strength parameter "
                        "(from the cells' overrides); dashed: the cell without attack (per series in its colour)."
                        + _more(all_fam, fam)))
        for g in (g for g in curves.groups if g.kind == "parameter"):
            p = plots.Panel(g.title, g.xlabel, log_x=_wide(g))
            for c in g.curves:
                p.series.append(plots.Series(c.label, c.x, [_value(cells[i], label, main) for i in c.cells]))
            out.append(("parameter", plots.panels([p], main, percent, f"{label}: {main} against {g.path}"),
                        f"{label} {main} against the grid parameter {g.path}."))
        all_single = [i for i in curves.single if not (_is_reference(cells[i]) and len(curves.single) == 1)]
        single = all_single[:MAX_BARS]
        if single:
            out.append(("cells", plots.bars([_short(cells[i]) for i in single],
                                            [_value(cells[i], label, main) for i in single], main, percent,
                                            f"{label}: {main} per cell"),
                        f"{label} {main} per cell" + (" (the cells on no curve)." if curves.groups else ".")
                        + _more(all_single, single)))
        groups = record.get("breakdown") if len(cells) == 1 else None
        if isinstance(groups, dict) and groups:
            items = sorted(((str(g), v.get(main) if isinstance(v, dict) else None) for g, v in groups.items()),
                           key=lambda t: -(t[1] if isinstance(t[1], (int, float)) else -1.0))[:MAX_BARS]
            out.append(("breakdown", plots.bars([g for g, _ in items], [v if isinstance(v, (int, float)) else None
                                                                       for _, v in items], main, percent,
                                                  f"{label}: {main} by operation"),
                        f"{label} {main} of the queries that went through each operation family."))
    if out:
        html.text("h3", "Charts")
        for kind, svg, caption in out:
            html.chart(kind, svg, caption)


def _wide(g: Any) -> bool:
    xs = [x for c in g.curves for x in c.x]
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100


def _is_reference(cell: dict[str, Any]) -> bool:
    from harness.curves import REFERENCE_NAMES, _as_part

    return any((_as_part(v) or {}).get("name") in REFERENCE_NAMES for v in (cell.get("overrides") or {}).values())
