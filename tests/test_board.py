"""The leaderboard database: idempotent adds, versioned names, ranking, concurrent writers, killed writers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.board import Board, entry_from_document
from harness.cli import main
from harness.documents import SCORE_KIND, flatten, load_document
from harness.errors import UserError
from report_docs import metric_record, run_doc

PY = sys.executable
GT = "query_id,reference_id\nQ00000,R000000\nQ00001,R000001\nQ00002,\nQ00003,R000003\n"


def run_cli(args, capsys):
    """``harness ARGS`` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def predictions(tmp_path, name, rows):
    path = tmp_path / f"{name}.csv"
    path.write_text("query_id,reference_id,score\n" + "".join(f"{q},{r},{s}\n" for q, r, s in rows))
    return str(path)


@pytest.fixture
def gt(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text(GT)
    return str(path)


GOOD = [("Q00000", "R000000", 0.9), ("Q00001", "R000001", 0.8), ("Q00003", "R000003", 0.7)]
MEDIUM = [("Q00000", "R000000", 0.9), ("Q00001", "R000009", 0.8), ("Q00003", "R000003", 0.7)]


def score_doc(track="disc21", mode="scorer=official", sha="a" * 64, gt_sha="g" * 64, result=None, **extra):
    return {"kind": SCORE_KIND, "schema_version": 1, "track": track, "mode": mode, "options": {},
            "submission": {"path": "x", "sha256": sha}, "ground_truth": {"path": "gt", "sha256": gt_sha},
            "display": {"n_*": "integer", "*": "percent"}, "main_metric": extra.pop("main_metric", "micro_ap"),
            "result": result if result is not None else {"micro_ap": 0.5, "recall_at_rank1": 0.6, "n_gt_pairs": 3},
            **extra}


def test_score_to_board_is_idempotent_and_versions_names(tmp_path, gt, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # the terminal table, unfolded
    db = str(tmp_path / "board.db")
    good, medium = predictions(tmp_path, "good", GOOD), predictions(tmp_path, "medium", MEDIUM)
    code, _, err = run_cli(["score", "disc21", medium, "--ground-truth", gt, "--board", db, "--name", "team-a"], capsys)
    assert code == 0 and "added team-a v1 to disc21 [scorer=official]" in err  # options with defaults, None left out
    code, _, err = run_cli(["score", "disc21", medium, "--ground-truth", gt, "--board", db, "--name", "team-a"], capsys)
    assert code == 0 and "unchanged" in err  # re-scoring the same file: nothing new
    code, _, err = run_cli(["score", "disc21", good, "--ground-truth", gt, "--board", db, "--name", "team-b"], capsys)
    assert "rank 1 of 2" in err
    # a different file under a taken name is its next version; the board ranks the latest
    code, _, err = run_cli(["score", "disc21", good, "--ground-truth", gt, "--board", db, "--name", "team-a"], capsys)
    assert code == 0 and "added team-a v2" in err
    code, out, _ = run_cli(["board", "show", db, "--json"], capsys)
    boards = json.loads(out)
    assert len(boards) == 1 and boards[0]["main_metric"] == "micro_ap" and boards[0]["mode"] == "scorer=official"
    rows = boards[0]["rows"]
    assert [(r["name"], r["version"], r["rank"]) for r in rows] == [("team-b", 1, 1), ("team-a", 2, 1)]  # tie: one rank
    assert rows[0]["main_value"] == pytest.approx(1.0) and rows[0]["values"]["n_gt_pairs"] == 3
    with Board(db) as b:
        assert b.count() == 3  # team-a v1 is kept (history), not ranked
    # the same file in another mode is another board, and keeps its version number
    code, _, err = run_cli(["score", "disc21", good, "--ground-truth", gt, "--scorer", "isc2021", "--board", db,
                            "--name", "team-a"], capsys)
    assert "added team-a v2 to disc21 [scorer=isc2021]" in err
    code, out, _ = run_cli(["board", "show", db, "--track", "disc21", "--json"], capsys)
    assert sorted(b["mode"] for b in json.loads(out)) == ["scorer=isc2021", "scorer=official"]
    code, out, _ = run_cli(["board", "show", db], capsys)
    assert code == 0 and "team-b v1" in out and "micro_ap" in out
    code, _, err = run_cli(["board", "show", db, "--track", "roxford5k"], capsys)
    assert code == 0 and "no submissions" in err


def test_score_board_options_are_checked(tmp_path, gt, capsys):
    good = predictions(tmp_path, "good", GOOD)
    code, _, err = run_cli(["score", "disc21", good, "--ground-truth", gt, "--name", "x"], capsys)
    assert code == 2 and "--board" in err
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    code, _, err = run_cli(["score", "disc21", good, "--ground-truth", gt, "--board", str(tmp_path / "junk.db")], capsys)
    assert code == 2 and err.startswith("error: ") and "junk.db" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["board", "show", str(tmp_path / "missing.db")], capsys)
    assert code == 2 and "no such board database" in err
    other = tmp_path / "other.db"  # somebody's own SQLite file: refused, and left as it was
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(run_doc([{"overrides": {}, "metrics": {"disc21": metric_record(0.5)}}])))
    for args in (["board", "show", str(other)], ["board", "add", str(other), str(doc)]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "not a harness board database" in err
    assert other.read_bytes() == before and not (tmp_path / "other.db-wal").exists()


def test_ground_truth_and_mode_separate_boards(tmp_path):
    with Board(tmp_path / "b.db") as b:
        for i, (gt_sha, mode) in enumerate([("g" * 64, "m1"), ("h" * 64, "m1"), ("g" * 64, "m2")]):
            b.add(entry_from_document("score", score_doc(mode=mode, gt_sha=gt_sha), "a" * 64, "same"))
        assert len(b.boards()) == 3 and b.count() == 3
        # the same file, same name and mode, same data: unchanged
        assert b.add(entry_from_document("score", score_doc(mode="m1"), "a" * 64, "same")).status == "unchanged"


def test_nested_results_rank_by_the_declared_main_metric(tmp_path):
    from harness_plugins.revisitop.scorer import make_scorer

    factory = make_scorer("roxford5k")
    result = {p: {"map": m, "mp@10": m / 2} for p, m in (("easy", 0.9), ("medium", 0.7), ("hard", 0.4))}
    assert factory.main_metric in flatten(result)
    with Board(tmp_path / "b.db") as b:
        for name, scale, sha in (("low", 0.5, "1" * 64), ("high", 1.0, "2" * 64), ("none", None, "3" * 64)):
            res = {p: {k: (None if scale is None else v * scale) for k, v in d.items()} for p, d in result.items()}
            doc = score_doc(track="roxford5k", mode="default", sha=sha, result={**res, "n_queries": 70},
                            main_metric=factory.main_metric, board_values=list(factory.board_values))
            b.add(entry_from_document("score", doc, sha, name))
        (board,) = b.boards()
    assert board["main_metric"] == "medium.map"
    assert [(r["name"], r["rank"]) for r in board["rows"]] == [("high", 1), ("low", 2), ("none", None)]
    assert board["rows"][0]["main_value"] == pytest.approx(0.7)
    assert board["rows"][0]["columns"] == ["easy.map", "hard.map", "medium.mp@10", "hard.mp@10"]


def test_run_documents_on_the_board(tmp_path, capsys):
    doc = run_doc([{"overrides": {}, "metrics": {"disc21": metric_record(0.4)}}])
    grid = run_doc([{"overrides": {"transform": {"name": "attack.jpeg", "quality": q}},
                     "metrics": {"disc21": metric_record(v)}} for q, v in ((90, 0.6), (10, 0.2))])
    for name, d in (("a", doc), ("g", grid)):
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
    db = str(tmp_path / "b.db")
    assert run_cli(["board", "add", db, str(tmp_path / "a.json"), "--name", "gist"], capsys)[0] == 0
    assert run_cli(["board", "add", db, str(tmp_path / "g.json")], capsys)[0] == 0  # name: the file's stem
    code, out, _ = run_cli(["board", "show", db, "--json"], capsys)
    boards = {b["mode"]: b for b in json.loads(out)}
    single = boards["disc21-official v2"]
    assert single["data"] == "fp" and single["rows"][0]["main_value"] == pytest.approx(0.4)
    assert single["rows"][0]["values"]["n_gt_pairs"] == 3 and "pr_curve" not in single["rows"][0]["values"]
    graded = boards["disc21-official v2, grid of 2 cells"]
    assert graded["rows"][0]["name"] == "g" and graded["rows"][0]["main_value"] == pytest.approx(0.4)  # mean of cells
    assert graded["main_metric"] == "micro_ap (mean of 2 cells)"
    (tmp_path / "bad.json").write_text("[1, 2]")
    code, _, err = run_cli(["board", "add", db, str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "expected a JSON object" in err
    with pytest.raises(UserError, match="name"):
        entry_from_document("run", doc, "x" * 64, "bad\nname")
    kind, loaded, sha = load_document(tmp_path / "a.json")
    assert kind == "run" and len(sha) == 64


# ------------------------------------------------------------------------------------- concurrency

WRITER = r"""
import json, sys
from harness.board import Board, entry_from_document
name, n, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    doc = {"kind": "harness-score", "schema_version": 1, "track": "disc21", "mode": "scorer=official",
           "submission": {"sha256": f"{name}-{i}"}, "ground_truth": {"sha256": "g"}, "main_metric": "micro_ap",
           "result": {"micro_ap": (hash(name) % 1000 + i) / 2000, "n_gt_pairs": 3}}
    with Board(db) as b:
        b.add(entry_from_document("score", doc, doc["submission"]["sha256"], name))
"""


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    db = str(tmp_path / "board.db")
    n = 6
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    procs = [subprocess.Popen([PY, "-c", WRITER, f"writer{k}", str(n), db], env=env, stderr=subprocess.PIPE, text=True)
             for k in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with Board(db) as b:
        assert b.count() == 8 * n
        (board,) = b.boards()
        assert sorted(r["name"] for r in board["rows"]) == [f"writer{k}" for k in range(8)]
        assert all(r["version"] == n for r in board["rows"])  # each name's versions 1..n, none lost or doubled
        versions = b.conn.execute("SELECT name, COUNT(DISTINCT version), COUNT(*) FROM submissions GROUP BY name").fetchall()
        assert all(v == n and c == n for _, v, c in versions)
        assert b.conn.execute("SELECT COUNT(*) FROM metric_values").fetchone()[0] == 8 * n * 2
        assert b.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


KILLED = r"""
import sys, time
import harness.board as board
db = sys.argv[1]
original = board.Board._insert_values
def stall(self, sub_id, values):  # inside the transaction, after the submission row
    original(self, sub_id, values)
    print("in transaction", flush=True)
    time.sleep(60)
board.Board._insert_values = stall
doc = {"kind": "harness-score", "schema_version": 1, "track": "disc21", "mode": "m",
       "submission": {"sha256": "killed"}, "ground_truth": {"sha256": "g"}, "result": {"micro_ap": 0.9}}
with board.Board(db) as b:
    b.add(board.entry_from_document("score", doc, "killed", "victim"))
"""


def test_a_writer_killed_mid_transaction_leaves_the_board_readable(tmp_path):
    db = str(tmp_path / "board.db")
    with Board(db) as b:
        b.add(entry_from_document("score", score_doc(mode="m", gt_sha="g"), "a" * 64, "before"))
    proc = subprocess.Popen([PY, "-c", KILLED, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "in transaction", proc.stderr.read()
        assert (tmp_path / "board.db-wal").exists()
    finally:
        proc.kill()  # SIGKILL: no cleanup, no rollback by the writer
        proc.wait(timeout=30)
    t0 = time.monotonic()
    with Board(db) as b:  # readable, and writable again at once (the dead writer's lock is gone)
        assert [r["name"] for bd in b.boards() for r in bd["rows"]] == ["before"]
        assert b.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        b.add(entry_from_document("score", score_doc(mode="m", gt_sha="g", sha="b" * 64), "b" * 64, "after"))
        assert b.count() == 2
    assert time.monotonic() - t0 < 10
    plain = sqlite3.connect(db)  # any SQLite client reads it too
    assert plain.execute("SELECT COUNT(*) FROM submissions WHERE name = 'victim'").fetchone()[0] == 0
    plain.close()
