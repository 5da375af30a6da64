"""The leaderboard database: scored submissions and run results in one SQLite file.

Each row is one document (a score document of ``harness score --board`` or a run result document)
under a name, in a leaderboard: (track, mode, data). ``mode`` is the scorer's resolved options (or, for
a run, its metrics' protocols and versions) and ``data`` the ground truth's sha256 (or the run's data
fingerprint), so only numbers computed the same way on the same data are ranked together.

Names are versioned: a name keeps every distinct file submitted under it in a track (version 1, 2,
...), and the board ranks each name's latest version. Adding a file that is already on the board
under that name and mode changes nothing (re-scoring is idempotent).

Concurrency: WAL journal, a 60 s busy timeout, and each add in one ``BEGIN IMMEDIATE`` transaction
(the version number is read and written under the write lock), so concurrent writers queue instead of
failing or losing rows; a writer killed mid-transaction leaves only a WAL tail that readers ignore.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.documents import flatten, main_value_name
from harness.errors import UserError

BOARD_SCHEMA = 1
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    track TEXT NOT NULL,           -- scorer TRACK, or the run's task
    mode TEXT NOT NULL,            -- resolved scorer options, or the run's metric protocols and versions
    data TEXT NOT NULL,            -- ground-truth sha256, or the run's data fingerprint
    name TEXT NOT NULL,
    version INTEGER NOT NULL,      -- 1, 2, ...: distinct files under this name in this track
    sha256 TEXT NOT NULL,          -- of the submitted file (the submission, or the result document)
    kind TEXT NOT NULL,            -- "score" or "run"
    created TEXT NOT NULL,         -- when it was added (UTC)
    metric TEXT NOT NULL,          -- the metric (label) whose values rank it: the track, or a run's first metric
    main_metric TEXT,
    main_value REAL,               -- what the board ranks by (higher is better), for a grid the mean over cells
    columns TEXT NOT NULL,         -- JSON list of the value names `board show` lists
    display TEXT NOT NULL,         -- JSON: value name pattern -> percent | number | integer
    document TEXT NOT NULL,        -- the whole document, as JSON
    UNIQUE (track, mode, data, name, sha256)
);
CREATE INDEX IF NOT EXISTS submissions_board ON submissions (track, mode, data, main_value);
CREATE TABLE IF NOT EXISTS metric_values (
    submission INTEGER NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    cell INTEGER NOT NULL,
    metric TEXT NOT NULL,
    name TEXT NOT NULL,
    value,                         -- no type affinity: integers stay integers
    PRIMARY KEY (submission, cell, metric, name)
);
"""


@dataclass
class Entry:
    """One document ready for the board."""

    track: str
    mode: str
    data: str
    name: str
    sha256: str
    kind: str
    metric: str  # the metric (label) whose values rank it
    main_metric: str | None
    main_value: float | None
    columns: list[str]
    display: dict[str, str]
    document: dict[str, Any]
    values: list[tuple[int, str, str, float | None]] = field(default_factory=list)  # (cell, metric, name, value)


@dataclass
class Added:
    status: str  # "added" or "unchanged"
    id: int
    version: int
    rank: int | None
    of: int


def entry_from_document(kind: str, doc: dict[str, Any], sha256: str, name: str) -> Entry:
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise UserError(f"board: name {name!r}: expected 1-200 printable characters")
    if kind == "score":
        return _score_entry(doc, sha256, name)
    return _run_entry(doc, sha256, name)


def _score_entry(doc: dict[str, Any], sha256: str, name: str) -> Entry:
    flat = flatten(doc["result"])
    main = doc.get("main_metric") if doc.get("main_metric") in flat else main_value_name({}, flat)
    display = {str(k): str(v) for k, v in (doc.get("display") or {}).items()}
    columns = [c for c in (doc.get("board_values") or []) if c in flat and c != main]
    if not columns:
        from harness.render import display_of

        columns = [c for c in flat if c != main and display_of({"display": display}, c) == "percent"]
    return Entry(track=doc["track"], mode=doc["mode"], data=str(doc["ground_truth"].get("sha256") or ""),
                 name=name, sha256=doc["submission"]["sha256"], kind="score", metric=doc["track"], main_metric=main,
                 main_value=_number(flat.get(main)) if main else None, columns=columns[:8], display=display,
                 document=doc, values=[(0, doc["track"], k, _number(v)) for k, v in flat.items()])


def _run_entry(doc: dict[str, Any], sha256: str, name: str) -> Entry:
    cells = doc["cells"]
    first_label, first = next(iter(cells[0]["metrics"].items()), (None, None))
    if first is None:
        raise UserError(f"board: the result document of task {doc['task']!r} has no metrics")
    values: list[tuple[int, str, str, float | None]] = []
    for i, cell in enumerate(cells):
        for label, m in cell["metrics"].items():
            values += [(i, str(label), k, _number(v)) for k, v in flatten(m["values"]).items()]
    flat0 = flatten(first["values"])
    main = main_value_name(first, flat0)
    mains = [_number(flatten(c["metrics"].get(first_label, {}).get("values", {})).get(main)) for c in cells] if main else []
    present = [v for v in mains if v is not None]
    main_value = sum(present) / len(present) if present and len(present) == len(cells) else None
    protocols = sorted({f"{m.get('protocol', label)} v{m.get('version', '?')}" for c in cells
                        for label, m in c["metrics"].items()})
    mode = ", ".join(protocols) + (f", grid of {len(cells)} cells" if len(cells) > 1 else "")
    from harness.render import display_of

    display = {str(k): str(v) for k, v in (first.get("display") or {}).items()}
    columns = [f"{c}" for c in flat0 if c != main and isinstance(flat0[c], float)
               and display_of({"display": display}, c) != "integer" and not c.startswith("threshold")][:6]
    if len(cells) > 1:
        columns = []  # a grid's other values are per cell: `harness report` shows them
    data = doc.get("data") or {}
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    return Entry(track=doc["task"], mode=mode, data=str(fingerprint or ""), name=name, sha256=sha256, kind="run",
                 metric=str(first_label),
                 main_metric=(f"{main} (mean of {len(cells)} cells)" if len(cells) > 1 else main) if main else None,
                 main_value=main_value, columns=columns, display=display, document=doc, values=values)


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f and abs(f) != float("inf") else None


class Board:
    """A leaderboard database file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise UserError(f"{path}: no such board database")
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"{path}: is a directory, not a board database")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # someone else's SQLite file is left alone: neither converted to WAL nor given our tables
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables or not tables and not create:
                raise UserError(f"{path}: a SQLite file but not a harness board database")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.conn.execute("PRAGMA foreign_keys = ON")
            if mode.lower() != "wal":
                raise UserError(f"{path}: cannot use the WAL journal (got {mode}): is it on a network file system?")
            with self._write():
                self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not a usable board database: {exc}") from None

    def _create_schema(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'board_schema'").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('board_schema', ?)", (str(BOARD_SCHEMA),))
        elif row[0] != str(BOARD_SCHEMA):
            raise UserError(f"{self.path}: board schema {row[0]} (this harness reads {BOARD_SCHEMA})")

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> None:
            self.conn.execute("BEGIN IMMEDIATE")  # take the write lock now: reads below see the final state

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _write(self) -> "Board._Tx":
        return Board._Tx(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def add(self, entry: Entry) -> Added:
        """Store ``entry`` (one transaction); unchanged when this file is already there under that name,
        track, mode and data."""
        key = (entry.track, entry.mode, entry.data, entry.name, entry.sha256)
        try:
            with self._write():
                row = self.conn.execute(
                    "SELECT id, version FROM submissions WHERE track=? AND mode=? AND data=? AND name=? AND sha256=?",
                    key).fetchone()
                if row is not None:
                    status, sub_id, version = "unchanged", row[0], row[1]
                else:
                    status = "added"
                    same_file = self.conn.execute(
                        "SELECT version FROM submissions WHERE track=? AND name=? AND sha256=?",
                        (entry.track, entry.name, entry.sha256)).fetchone()
                    if same_file is not None:  # this file scored in another mode keeps its version
                        version = same_file[0]
                    else:
                        version = 1 + self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM submissions "
                                                        "WHERE track=? AND name=?", (entry.track, entry.name)).fetchone()[0]
                    sub_id = self._insert(entry, version)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: cannot add to the board: {exc}") from None
        rank, of = self._rank_of(entry, sub_id)
        return Added(status, sub_id, version, rank, of)

    def _insert(self, entry: Entry, version: int) -> int:
        cur = self.conn.execute(
            "INSERT INTO submissions (track, mode, data, name, version, sha256, kind, created, metric, main_metric, "
            "main_value, columns, display, document) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (entry.track, entry.mode, entry.data, entry.name, version, entry.sha256, entry.kind,
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), entry.metric, entry.main_metric, entry.main_value,
             json.dumps(entry.columns), json.dumps(entry.display), json.dumps(entry.document)))
        sub_id = int(cur.lastrowid)
        self._insert_values(sub_id, entry.values)
        return sub_id

    def _insert_values(self, sub_id: int, values: list[tuple[int, str, str, float | None]]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO metric_values VALUES (?,?,?,?,?)",
                              [(sub_id, c, m, n, v) for c, m, n, v in values])

    def _rank_of(self, entry: Entry, sub_id: int) -> tuple[int | None, int]:
        for board in self.boards(track=entry.track):
            if (board["mode"], board["data"]) == (entry.mode, entry.data):
                for row in board["rows"]:
                    if row["id"] == sub_id:
                        return row["rank"], len(board["rows"])
                return None, len(board["rows"])  # an older version of a name that has a newer one
        return None, 0

    def boards(self, track: str | None = None, *, with_documents: bool = False) -> list[dict[str, Any]]:
        """Every leaderboard (track, mode, data), each with its ranked rows: the latest version of each
        name, by main value (higher first; ties share a rank, the earlier submission listed first)."""
        track_filter, args = ("AND s.track = ?", (track,)) if track is not None else ("", ())
        doc_col = ", s.document" if with_documents else ""
        try:
            rows = self.conn.execute(
                f"""SELECT s.id, s.track, s.mode, s.data, s.name, s.version, s.sha256, s.kind, s.created,
                           s.main_metric, s.main_value, s.columns, s.display, s.metric{doc_col}
                    FROM submissions s
                    WHERE s.version = (SELECT MAX(t.version) FROM submissions t WHERE t.track = s.track
                                       AND t.mode = s.mode AND t.data = s.data AND t.name = s.name) {track_filter}
                    ORDER BY s.track, s.mode, s.data, s.main_value IS NULL, s.main_value DESC, s.created, s.id""",
                args).fetchall()
            values = self._values([(r[0], r[13]) for r in rows])
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: cannot read the board: {exc}") from None
        out: list[dict[str, Any]] = []
        for r in rows:
            if not out or (out[-1]["track"], out[-1]["mode"], out[-1]["data"]) != r[1:4]:
                out.append({"track": r[1], "mode": r[2], "data": r[3], "main_metric": r[9], "rows": []})
            board = out[-1]
            rows_so_far = board["rows"]
            rank = len(rows_so_far) + 1
            if rows_so_far and rows_so_far[-1]["main_value"] == r[10] and r[10] is not None:
                rank = rows_so_far[-1]["rank"]
            row = {"rank": rank if r[10] is not None else None, "id": r[0], "name": r[4], "version": r[5],
                   "sha256": r[6], "kind": r[7], "created": r[8], "main_metric": r[9], "main_value": r[10],
                   "columns": json.loads(r[11]), "display": json.loads(r[12]), "values": values.get(r[0], {})}
            if with_documents:
                row["document"] = json.loads(r[14])
            rows_so_far.append(row)
        return out

    def _values(self, ids: list[tuple[int, str]]) -> dict[int, dict[str, float | None]]:
        """Per submission: the values of its ranked metric in its first cell."""
        wanted = dict(ids)
        out: dict[int, dict[str, float | None]] = {i: {} for i in wanted}
        for chunk in _chunks(list(wanted), 500):
            marks = ",".join("?" * len(chunk))
            for sub, metric, name, value in self.conn.execute(
                    f"SELECT submission, metric, name, value FROM metric_values WHERE submission IN ({marks}) "
                    "AND cell = 0", chunk):
                if metric == wanted[sub]:
                    out[sub][name] = value
        return out

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0])


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
