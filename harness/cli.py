"""The ``harness`` command line. Heavy libraries are imported only by the commands that need them:
``harness --help`` and ``harness validate`` never import torch."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from harness import __version__
from harness.errors import Terminated, UserError, environment_error, error_lines, is_environment_error
from harness.messages import one_line, short_repr

from harness.kinds import KINDS  # light: no plugin machinery at start-up

KIND_CHOICES = list(KINDS)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Evaluate copy-detection, instance-retrieval and watermarking models from YAML task specs.

    Add --debug to any command to see a traceback instead of the one-line error.
    """


@cli.command()
@click.argument("spec", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="SPEC")
@click.option("--set", "overrides", multiple=True, metavar="PATH=YAML",
              help="Replace the spec node at PATH with the parsed YAML value (repeatable; every SPEC).")
@click.option("--output", "output_dir", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the result document.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result document alone on stdout (several SPECs: a JSON list of them).")
@click.option("--no-cache", is_flag=True, help="Recompute every stage (nothing is read from the cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache location (default: $HARNESS_CACHE_DIR or the user cache directory).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def run(spec: tuple[str, ...], overrides: tuple[str, ...], output_dir: str, as_json: bool, no_cache: bool,
        cache_dir: str | None, quiet: bool) -> None:
    """Run one or more task SPEC files: every stage cached, one result document written per SPEC.
    Several SPECs (a suite) are all validated first, then run in order, and shown as one table."""
    from harness.progress import Reporter
    from harness.runner import run_spec

    reporter = Reporter(quiet=quiet)
    specs = spec  # one or more (the argument keeps the name SPEC for usage lines and errors)
    if len(specs) > 1:  # a typo in the last spec should not cost the runs of the first ones
        from harness.spec import load_spec

        for path in specs:
            load_spec(path, list(overrides))
    with _json_stdout(as_json):  # with --json, stdout holds the documents alone, whatever plugins print
        runs = [run_spec(path, list(overrides), cache_dir=cache_dir, use_cache=not no_cache,
                         output_dir=output_dir, reporter=reporter) for path in specs]
    if as_json:
        click.echo(json.dumps(runs[0][0] if len(runs) == 1 else [doc for doc, _ in runs], indent=2))
        return
    from harness.render import render_run, render_suite

    if len(runs) == 1:
        render_run(_console(), *runs[0])
    else:
        render_suite(_console(), runs)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="PATH=YAML", help="As for `run`.")
def validate(spec: str, overrides: tuple[str, ...]) -> None:
    """Check a spec (keys, types, plugin names and parameters) without running it."""
    from harness.spec import load_spec

    s = load_spec(spec, list(overrides))
    click.echo(f"{spec}: ok (task {s.task}, spec hash {s.hash[:12]})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List loaded plugins, their parts, and plugins that failed to load (with the error)."""
    from harness.plugins import get_registry

    reg = get_registry()
    listing = []
    for info in reg.plugins:
        parts = {k: sorted(n for n, p in reg.parts[k].items() if p.plugin == info.name) for k in KINDS}
        listing.append({"name": info.name, "package": info.package, "version": info.version,
                        "parts": {k: v for k, v in parts.items() if v},
                        "errors": [f"{f.stage}: {f.error}" for f in reg.failures if f.plugin == info.name]})
    loaded = {i.name for i in reg.plugins}
    for f in reg.failures:
        if f.plugin not in loaded:
            listing.append({"name": f.plugin, "package": f.package, "version": None, "parts": {},
                            "errors": [f"{f.stage}: {f.error}"]})
            loaded.add(f.plugin)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="harness plugins", show_lines=True)
    for col, ratio in (("plugin", 1), ("package", 1), ("parts", 4)):
        table.add_column(col, ratio=ratio, overflow="fold")
    for p in listing:
        lines = [f"[bold]{k}[/bold]: {escape(', '.join(v))}" for k, v in p["parts"].items()]
        lines += [f"[red]{escape(e)}[/red]" for e in p["errors"]]
        table.add_row(escape(p["name"]), escape(f"{p['package']} {p['version'] or ''}".strip()), "\n".join(lines))
    _console().print(table)


@cli.command(name="list")
@click.argument("kind", type=click.Choice(KIND_CHOICES), metavar="KIND")
def list_parts(kind: str) -> None:
    """List registered parts of one KIND with their one-line docs and parameters."""
    from rich.markup import escape  # plugin text is not markup: "[min, max]" must print as written
    from rich.table import Table

    from harness.params import describe_params
    from harness.plugins import get_registry

    reg = get_registry()
    table = Table(title=f"{kind}s")
    for col in ("name", "plugin", "description", "parameters"):
        table.add_column(col, overflow="fold")
    for name in reg.names(kind):
        part = reg.get(kind, name)
        if kind == "pipeline":  # a pipeline's "parameters" are the spec keys it reads
            fields = getattr(part.factory, "fields", {}) or {}
            params = ", ".join(f"{k}{'' if f.required else '?'}: {f.part_kind + ' ' if f.part_kind else ''}{f.kind}"
                               for k, f in fields.items())
        else:
            params = ", ".join(f"{p.name}: {p.annotation}" + ("" if p.required else f" = {p.default!r}")
                               for p in describe_params(part.factory))
        table.add_row(*(escape(t) for t in (name, f"{part.plugin} ({part.package})", part.doc, params)))
    _console().print(table)
    if not reg.names(kind):
        click.echo(f"no {kind} registered", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def env(as_json: bool) -> None:
    """Versions, threads and CPU/GPU of this machine (imports torch to ask about GPUs)."""
    from harness.results import environment

    info = environment(probe_gpu=True)
    info["harness"] = __version__
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            for k, v in value.items():
                click.echo(f"{key}.{k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@cli.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("track")
@click.argument("submission", type=click.Path(dir_okay=False), required=False)
@click.option("--ground-truth", "ground_truth", type=click.Path(dir_okay=False),
              help="Ground-truth file of the track (CSV, revisitop .pkl or its .json form).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("-h", "--help", "show_help", is_flag=True, help="Show this message, with TRACK's own options.")
@click.option("--board", "board_db", type=click.Path(dir_okay=False), default=None,
              help="Also store the scored submission in this leaderboard database (SQLite).")
@click.option("--name", default=None, help="Its name on the board (default: the submission file's stem).")
@click.argument("track_options", nargs=-1, type=click.UNPROCESSED)
def score(track: str, submission: str | None, ground_truth: str | None, as_json: bool, show_help: bool,
          board_db: str | None, name: str | None, track_options: tuple[str, ...]) -> None:
    """Score a leaderboard SUBMISSION for TRACK from raw files, rejecting malformed or hostile input.

    Each track declares its own options (e.g. disc21: --scorer, --max-results, --knn); see
    `harness score TRACK --help`.
    """
    from harness.plugins import get_registry
    from harness.scoring_options import parse_track_options, track_help

    reg = get_registry()
    part = reg.get("scorer", track)
    if show_help:
        click.echo(click.get_current_context().get_help())
        click.echo("\n" + track_help(track, part.factory))
        return
    options = parse_track_options(track, part.factory, list(track_options))
    if submission is None:
        raise click.UsageError("missing argument 'SUBMISSION'")
    if ground_truth is None:
        raise click.UsageError("missing option '--ground-truth'")
    if name is not None and board_db is None:
        raise click.UsageError("--name names a submission on a board: give --board DB too")
    with _json_stdout(as_json):
        result = reg.create("scorer", track, options).score(submission, ground_truth)
    if board_db is not None:
        from harness.board_cli import add_score

        add_score(board_db, name, track, options, part, result, submission, ground_truth)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=_json_default))
        return
    from harness.render import render_scores

    render_scores(_console(), track, result, display=getattr(part.factory, "display", None))


def _json_stdout(as_json: bool) -> Any:
    """While a --json command computes, stdout goes to stderr (plugin prints cannot corrupt the JSON)."""
    from contextlib import nullcontext

    from harness.plugins import stdout_to_stderr

    return stdout_to_stderr() if as_json else nullcontext()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (``--debug``: traceback).

    Every line printed for an error goes through :func:`harness.errors.error_lines` (control
    characters escaped, bounded length), so user data cannot forge a second ``error:`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    previous = _terminate_like_interrupt()
    try:
        cli.main(args=args, prog_name="harness", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # click's own usage errors: one line like every other error
        _fail([_click_message(exc)], 2)
    except UserError as exc:
        if debug:
            raise
        _fail(error_lines(exc), exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(143)
    except OSError as exc:
        if debug:
            raise
        if is_environment_error(exc):  # a full disk, a read-only or unwritable directory, a name too long
            _fail(error_lines(environment_error(exc)), 2)
        _internal(exc)
    except MemoryError as exc:  # what parameters or inputs asked for exceeds this machine
        if debug:
            raise
        detail = one_line(str(exc), 300) if str(exc) else "an allocation failed"
        _fail([f"out of memory: {detail} (smaller batch sizes, dimensions or k need less)"], 2)
    except SystemExit as exc:  # click never raises it here (standalone_mode=False): plugin code did
        if debug:
            raise
        _fail([f"plugin code raised SystemExit({short_repr(exc.code)}) (run again with --debug for the traceback)"],
              1, "internal error: ")
    except Exception as exc:  # noqa: BLE001 - a bug (ours or a plugin's): one line unless --debug
        if debug:
            raise
        _internal(exc)
    finally:
        _restore_sigterm(previous)


def _fail(lines: list[str], code: int, prefix: str = "error: ") -> None:
    for line in lines or ["error"]:
        click.echo(prefix + line, err=True)
    sys.exit(code)


def _internal(exc: BaseException) -> None:
    _fail([one_line(f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)")], 1,
          "internal error: ")


def _click_message(exc: click.ClickException) -> str:
    """click's message on one line, naming the command and pointing at its --help."""
    message = one_line(exc.format_message()).rstrip(".")
    if message[:2].istitle():  # "Missing option" -> "missing option", as in every other error line
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{ctx.command_path}: {message} (see '{ctx.command_path} --help')"
    return message


_FORK_HOOK = False


def _terminate_like_interrupt() -> Any:
    """SIGTERM raises :class:`Terminated` in the main thread, so cleanup runs as for Ctrl-C (a second
    SIGTERM during the cleanup kills at once: the next run sweeps what is left)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    global _FORK_HOOK
    if not _FORK_HOOK and hasattr(os, "register_at_fork"):  # forked workers (loaders) just die on SIGTERM
        os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
        _FORK_HOOK = True
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - no signals here (embedded interpreter)
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        import signal

        signal.signal(signal.SIGTERM, previous)


import harness.board_cli  # noqa: E402,F401 - registers board, report and compare on `cli`
