"""Command-line options of ``harness score TRACK``, declared by each scorer plugin's factory signature.

The core names no track: ``--max-results`` exists because the disc21 scorer's factory takes
``max_results``. A ``Literal`` parameter becomes a choice, ``bool`` a flag, ``int``/``float``/``str`` a
typed value; the factory's optional ``options_help`` mapping documents them.
"""

from __future__ import annotations

import typing
from typing import Any, Callable

import click

from harness.errors import UserError


def _option(name: str, tp: Any, help_text: str | None) -> click.Option:
    flag = "--" + name.replace("_", "-")
    base = _strip_optional(tp)
    if base is bool:
        return click.Option([flag, name], is_flag=True, default=None, show_default=False, help=help_text)
    if typing.get_origin(base) is typing.Literal:
        return click.Option([flag, name], type=click.Choice([str(a) for a in typing.get_args(base)]), default=None,
                            show_default=False, help=help_text)
    click_type = {int: click.INT, float: click.FLOAT}.get(base, click.STRING)
    return click.Option([flag, name], type=click_type, default=None, show_default=False, help=help_text)


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _strip_optional(args[0])
    return tp


def _command(track: str, factory: Callable[..., Any]) -> click.Command:
    from harness.params import _signature

    sig, hints = _signature(factory)
    helps = getattr(factory, "options_help", {}) or {}
    params = [_option(n, hints.get(n, str), helps.get(n)) for n, p in sig.parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return click.Command(f"harness score {track}", params=params, add_help_option=False)


def parse_track_options(track: str, factory: Callable[..., Any], args: list[str]) -> dict[str, Any]:
    """The options the user typed after TRACK, typed by the scorer's signature; only those given."""
    command = _command(track, factory)
    try:
        ctx = command.make_context(command.name, list(args), resilient_parsing=False)
    except click.NoSuchOption as exc:
        raise UserError(f"track {track!r} does not support {exc.option_name}") from None
    except click.BadParameter as exc:
        where = "/".join(exc.param.opts) if exc.param is not None else "an option"
        raise UserError(f"harness score: invalid value for '{where}': {exc.message.rstrip('.')}") from None
    except click.UsageError as exc:
        raise UserError(f"track {track!r}: {exc.message}") from None
    return {k: v for k, v in ctx.params.items() if v is not None}


def track_help(track: str, factory: Callable[..., Any]) -> str:
    command = _command(track, factory)
    rows = [p.get_help_record(click.Context(command)) for p in command.params]
    rows = [r for r in rows if r]
    if not rows:
        return f"Track {track!r} has no options of its own."
    formatter = click.HelpFormatter()
    with formatter.section(f"Options of track {track!r}"):
        formatter.write_dl(rows)
    return formatter.getvalue().rstrip()
