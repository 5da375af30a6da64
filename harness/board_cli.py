"""Commands on result documents: ``harness board add|show``, ``harness report``, ``harness compare``.

Registered on the ``cli`` group by the import at the end of :mod:`harness.cli`. Each imports only
sqlite3/json (and matplotlib for ``report``), never torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from harness.cli import _console, cli
from harness.errors import UserError


@cli.group()
def board() -> None:
    """Leaderboards in a SQLite file: add scored submissions or run results, show them ranked."""


@board.command("add")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Submission name (default: the result file's stem).")
def board_add(db: str, result: str, name: str | None) -> None:
    """Add RESULT (a run result document, or a score document) to the board DB."""
    from harness.board import Board, entry_from_document
    from harness.documents import load_document

    kind, doc, sha = load_document(result)
    entry = entry_from_document(kind, doc, sha, name or Path(result).stem)
    with Board(db) as b:
        added = b.add(entry)
    report_added(entry, added)


def report_added(entry: Any, added: Any) -> None:
    """One line on stderr: what happened and the rank."""
    where = f"{entry.track} [{entry.mode}]"
    rank = f", rank {added.rank} of {added.of}" if added.rank is not None else ""
    if added.status == "unchanged":
        click.echo(f"board: {entry.name} v{added.version} already on {where} (same file): unchanged{rank}", err=True)
    else:
        click.echo(f"board: added {entry.name} v{added.version} to {where}{rank}", err=True)


@board.command("show")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--track", default=None, help="Only this track (a scorer TRACK or a run's task).")
@click.option("--json", "as_json", is_flag=True, help="Print the ranked boards as JSON.")
def board_show(db: str, track: str | None, as_json: bool) -> None:
    """Print the ranked leaderboards of DB (the latest version of each name; higher is better)."""
    from harness.board import Board

    with Board(db, create=False) as b:
        boards = b.boards(track)
    if as_json:
        click.echo(json.dumps(boards, indent=2))
        return
    if not boards:
        click.echo(f"{db}: no submissions" + (f" in track {track!r}" if track else ""), err=True)
        return
    console = _console()
    for bd in boards:
        console.print(board_table(bd))


def board_table(bd: dict[str, Any]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from harness.render import display_of, format_value

    rows = bd["rows"]
    columns = list(dict.fromkeys(c for r in rows for c in r["columns"]))
    display = rows[0]["display"] if rows else {}
    main = bd["main_metric"] or "main"
    title = f"{bd['track']} [{bd['mode']}]" + (f" data {bd['data'][:12]}" if bd["data"] else "")
    table = Table(title=escape(title))
    table.add_column("#", justify="right")
    table.add_column("name", no_wrap=True)
    main_base = main.split(" (")[0]
    main_fmt = display_of({"display": display}, main_base)
    table.add_column(escape(main + (" (%)" if main_fmt == "percent" else "")), justify="right", style="bold")
    fmts = [display_of({"display": display}, c) for c in columns]
    for c, f in zip(columns, fmts):
        table.add_column(escape(c + (" (%)" if f == "percent" else "")), justify="right")
    table.add_column("file sha256", no_wrap=True)
    table.add_column("added (UTC)")
    for r in rows:
        table.add_row("" if r["rank"] is None else str(r["rank"]), escape(f"{r['name']} v{r['version']}"),
                      format_value(r["main_value"], main_fmt, digits=4),
                      *[format_value(r["values"].get(c), f, digits=4) for c, f in zip(columns, fmts)],
                      r["sha256"][:10], escape(r["created"][:16].replace("T", " ")))
    return table


@cli.command()
@click.argument("results", nargs=-1, type=click.Path(dir_okay=False), metavar="RESULT...")
@click.option("--board", "board_db", type=click.Path(dir_okay=False), default=None,
              help="Also show this leaderboard database (ranked tables, PR curves of its submissions).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--title", default=None, help="Title of the report.")
def report(results: tuple[str, ...], board_db: str | None, output: str, title: str | None) -> None:
    """Write one static, offline HTML report of run result documents (a RESULT file may hold a JSON list
    of them, as `harness run SPEC... --json` prints): provenance, metric tables, precision-recall,
    robustness and parameter curves, and the leaderboard."""
    from harness.board import Board
    from harness.documents import load_documents
    from harness.report import write_report

    if not results and board_db is None:
        raise click.UsageError("give RESULT files, --board DB, or both")
    docs = []
    for path in results:
        for kind, doc in load_documents(path):
            if kind != "run":
                raise UserError(f"{path}: a score document: add it to a board (`harness board add`) and use --board")
            docs.append((path, doc))
    boards = None
    if board_db is not None:
        with Board(board_db, create=False) as b:
            boards = b.boards(with_documents=True)
    size = write_report(output, docs, boards=boards, title=title)
    click.echo(f"report: {output} ({size / 1024:.0f} kB, {len(docs)} result document(s)"
               + (f", {sum(len(b['rows']) for b in boards)} board row(s)" if boards is not None else "") + ")", err=True)


@cli.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--force", is_flag=True, help="Show the deltas even when the results are not comparable (flagged).")
def compare(a: str, b: str, as_json: bool, force: bool) -> None:
    """Metric deltas (B - A) per cell of two run results; refuses results that are not comparable
    (different data, protocol or metric version, or grid) unless --force, which flags them."""
    from harness.compare import compare_documents
    from harness.documents import load_document

    kinds = [load_document(p) for p in (a, b)]
    for path, (kind, _, _) in zip((a, b), kinds):
        if kind != "run":
            raise UserError(f"{path}: a score document: compare run result documents")
    result = compare_documents(kinds[0][1], kinds[1][1])
    if result["problems"] and not force:
        raise UserError(f"{a} and {b} are not comparable: " + "; ".join(result["problems"])
                        + " (--force shows the deltas anyway)")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from harness.compare import render_comparison

    render_comparison(_console(), result, a, b)
    if result["problems"]:
        sys.stderr.write("warning: not comparable: " + "; ".join(result["problems"]) + "\n")


def add_score(db: str, name: str | None, track: str, options: dict[str, Any], part: Any, result: dict[str, Any],
              submission: str, ground_truth: str) -> None:
    """``harness score ... --board DB``: the scored submission as a score document, on the board."""
    from harness.board import Board, entry_from_document
    from harness.documents import score_document

    doc = score_document(track=track, options=options, factory=part.factory, part=part, result=result,
                         submission=submission, ground_truth=ground_truth)
    entry = entry_from_document("score", doc, doc["submission"]["sha256"], name or Path(submission).stem)
    with Board(db) as b:
        added = b.add(entry)
    report_added(entry, added)
