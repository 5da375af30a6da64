"""Error lines of the CLI: click's own usage errors, untrusted text in messages, plugins that exit.

Every failure prints ``error: ...`` lines only (one per problem), exit code 2 for what the user can
fix, and no line can be forged or blown up by user data."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from plugin_site import fake_distribution, run_harness, toy_site


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


GOOD_SPEC = ("task: t\ndataset: {name: disc21, root: /nowhere}\ndescriptor: {name: gist}\n"
             "index: {name: faiss}\nmetrics: [{name: disc21}]\n")


# -- point 13: click's usage errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run"], "error: harness run: missing argument 'SPEC' (see 'harness run --help')"),
        (["frobnicate"], "error: harness: no such command 'frobnicate' (see 'harness --help')"),
        (["run", "x.yaml", "--colour"], "error: harness run: no such option '--colour'"),
        (["score", "disc21", "sub.csv"], "error: harness score: missing option '--ground-truth'"),
        (["score", "disc21", "sub.csv", "--ground-truth", "gt.csv", "--max-results", "many"],
         "error: harness score: invalid value for '--max-results': 'many' is not a valid integer"),
        (["list", "gadget"], "error: harness list: invalid value for 'KIND': 'gadget' is not one of"),
    ],
)
def test_click_usage_errors_are_one_error_line(args, expected, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(expected), lines[0]
    assert "Usage:" not in err


def test_a_directory_where_a_file_is_expected_is_one_error_line(tmp_path, capsys):
    code, _, err = run_main(["validate", str(tmp_path)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"error: harness validate: invalid value for 'SPEC': File '{tmp_path}' is a directory "
        "(see 'harness validate --help')"
    ]


# -- point 7: untrusted text in error lines ------------------------------------------------------------


def test_a_file_name_with_a_newline_cannot_forge_an_error_line(tmp_path, capsys):
    name = str(tmp_path / "spec.yaml\nerror: everything is fine")
    code, _, err = run_main(["run", name], capsys)
    assert code == 2
    assert err.splitlines() == [f"error: {tmp_path}/spec.yaml\\nerror: everything is fine: spec file not found"]


def test_a_spec_key_with_a_newline_or_escape_cannot_forge_a_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD_SPEC + '"seed\\nerror: forged\\e[2J": 1\n')
    code, _, err = run_main(["validate", str(spec)], capsys)
    assert code == 2
    assert err.splitlines() == [f"error: {spec}:6: seed\\nerror: forged\\x1b[2J: unknown key"]


def test_each_spec_issue_is_its_own_line_and_only_those(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD_SPEC.replace("gist", "gits") + '"a\\nb": 1\n')
    code, _, err = run_main(["validate", str(spec)], capsys)
    assert code == 2
    assert err.splitlines() == [f"error: {spec}:6: a\\nb: unknown key",
                                f"error: {spec}:3: descriptor.name: unknown descriptor 'gits' (did you mean 'gist'?)"]


def test_error_lines_are_bounded_and_escaped():
    from harness.errors import error_lines
    from harness.messages import MAX_LINE, one_line

    lines = error_lines(UserError("x" * 10 * MAX_LINE + "\r\n"))
    assert len(lines) == 1 and len(lines[0]) < MAX_LINE + 50 and "more characters" in lines[0]
    assert one_line("a\nb\rc\x00d\u2028e\x1b") == "a\\nb\\rc\\x00d\\u2028e\\x1b"
    assert one_line("plain, printable: é ü") == "plain, printable: é ü"


def test_short_repr_is_bounded_in_time_and_size_on_shared_references():
    from harness.messages import short_repr

    x: list = [1]
    for _ in range(200):  # 10**200 leaves when walked; a few hundred bytes when pickled
        x = [x] * 10
    big = {"k": x, "n": 7 ** 200_000, "s": "é" * 10**6, "b": b"\x00" * 10**6}
    start = time.perf_counter()
    text = short_repr(big)
    assert time.perf_counter() - start < 0.1
    assert len(text) <= 90 and text.startswith("{'k': [[[[")
    assert short_repr(7 ** 200_000) == f"<int of {(7 ** 200_000).bit_length():,} bits>"
    assert short_repr("a\nb") == "'a\\nb'"
    assert short_repr({"a": (1,), "b": None, "c": 1.5}) == "{'a': (1,), 'b': None, 'c': 1.5}"
    assert short_repr(object()) == "<object object>"


# -- point 11: plugins that exit or print ----------------------------------------------------------------


EXITING = {
    "exits_at_import": """
        import os, sys
        print("hello from a chatty plugin")            # Python-level stdout
        os.write(1, b"and from C-level stdout\\n")     # what a C extension would do
        sys.exit(3)
    """,
    "exits_in_part": """
        import sys
        import harness
        from toy_plugins import MeanColor

        print("chatty at import, but loads")

        class Quitter(MeanColor):
            def describe(self, images):
                sys.exit("bye")

        class Chatty(MeanColor):
            def describe(self, images):
                print("describing", len(images), "images")
                return super().describe(images)

        class QuitsAtCreation:
            def __init__(self):
                raise SystemExit(4)

        @harness.hookimpl
        def register_descriptors(register):
            register("quitter", Quitter)
            register("chatty", Chatty)
            register("quits_at_creation", QuitsAtCreation)
    """,
}


@pytest.fixture(scope="module")
def exiting_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    fake_distribution(site, "harness-exiting", EXITING, {"exits_at_import": "exits_at_import",
                                                         "exits_in_part": "exits_in_part"})
    return toy_site(site)


def _harness(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_harness(site, *args, cwd=cwd)


def test_a_plugin_exiting_or_printing_at_import_is_isolated_and_json_stays_clean(exiting_site, tmp_path):
    res = _harness(exiting_site, "plugins", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    listing = {p["name"]: p for p in json.loads(res.stdout)}  # stdout is the JSON document alone
    assert listing["exits_at_import"]["errors"] == ["import: SystemExit: 3"]
    assert listing["exits_in_part"]["parts"] == {"descriptor": ["chatty", "quits_at_creation", "quitter"]}
    assert listing["disc21"]["errors"] == []
    assert "hello from a chatty plugin" in res.stderr and "and from C-level stdout" in res.stderr


def test_a_part_printing_while_it_runs_cannot_break_json_output(exiting_site, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"task: t\ndataset: {{name: toy, root: {tmp_path / 'data'}}}\ndescriptor: {{name: chatty}}\n"
                    "index: {name: brute}\nmetrics: [{name: recall_at}]\n")
    res = _harness(exiting_site, "run", str(spec), "--json", "-q", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["task"] == "t"
    assert "describing" in res.stderr


def test_a_part_raising_system_exit_is_reported_like_any_plugin_failure(exiting_site, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent(f"""
        task: t
        dataset: {{name: toy, root: {tmp_path / 'data'}}}
        descriptor: {{name: quitter}}
        index: {{name: brute}}
        metrics: [{{name: recall_at}}]
    """))
    res = _harness(exiting_site, "run", str(spec), "--json", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines()[-1] == ("internal error: plugin code raised SystemExit('bye') "
                                           "(run again with --debug for the traceback)")
    assert not list((tmp_path / "cache" / "tmp").glob("*/")), "the cache temp dir was cleaned up"

    res = _harness(exiting_site, "run", str(spec), "--set", "descriptor={name: quits_at_creation}", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == ("error: descriptor 'quits_at_creation' (package harness-exiting) could "
                                           "not be created: SystemExit: 4")


# -- point 14: plugin text is not markup ------------------------------------------------------------


def test_list_keeps_bracketed_text_of_descriptions_and_parameters(monkeypatch):
    from click.testing import CliRunner

    from harness.cli import cli

    monkeypatch.setenv("COLUMNS", "400")
    out = CliRunner().invoke(cli, ["list", "transform"]).output
    assert "Gaussian blur with a radius in [min_radius, max_radius] pixels" in out
    out = CliRunner().invoke(cli, ["list", "descriptor"]).output
    assert "bins: tuple[int, int, int] = (8, 3, 3)" in out
