"""Validation of a part's spec parameters against its factory's signature and type hints.

The factory signature is the schema: unknown names (with a did-you-mean), missing required ones and
values that do not match the annotations are reported before anything runs. Values are checked with
pydantic in strict-ish mode (no silent str -> int coercion); hints that cannot be resolved are not
type-checked rather than guessed.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import annotated_types  # tiny, pure Python (a pydantic dependency): no cost at CLI start-up

_MISSING = inspect.Parameter.empty

# Constrained types for factory signatures: a violation is a spec error with file:line, before any run.
#   def __init__(self, k: PositiveInt = 10, workers: NonNegativeInt = 0): ...
PositiveInt = typing.Annotated[int, annotated_types.Ge(1)]
NonNegativeInt = typing.Annotated[int, annotated_types.Ge(0)]


@dataclass(frozen=True)
class PartRef:
    """Marks a factory parameter whose value is itself a part of ``kind`` (``many``: a list of them).

    The spec gives it as a part mapping (``{name: ..., **params}``); it is validated recursively (with
    file:line and did-you-mean), created through the run's registry, and its identity enters the cache
    key of the part that holds it. The factory receives the created object (or a list of them)."""

    kind: str
    many: bool = False


def PartParam(kind: str) -> Any:  # noqa: N802 - used as a type in signatures
    """``def __init__(self, transform: PartParam("transform") = None)``: a parameter that is a part."""
    return typing.Annotated[Any, PartRef(kind)]


def PartListParam(kind: str) -> Any:  # noqa: N802
    """A parameter that is a list (a chain) of parts of ``kind``."""
    return typing.Annotated[Any, PartRef(kind, many=True)]


def part_ref(tp: Any) -> PartRef | None:
    """The PartRef carried by an annotation (also inside ``Optional[...]``), else None."""
    stack = [tp]
    while stack:
        t = stack.pop()
        if typing.get_origin(t) is typing.Annotated:
            for extra in typing.get_args(t)[1:]:
                if isinstance(extra, PartRef):
                    return extra
        stack += list(typing.get_args(t))
    return None


def part_params(factory: Callable[..., Any]) -> dict[str, tuple[PartRef, Any]]:
    """Parameters of ``factory`` that are parts: name -> (PartRef, default or inspect.Parameter.empty)."""
    sig, hints = _signature(factory)
    out = {}
    for name, p in sig.parameters.items():
        ref = part_ref(hints.get(name))
        if ref is not None:
            out[name] = (ref, p.default)
    return out


@dataclass(frozen=True)
class ParamInfo:
    name: str
    annotation: str
    default: Any
    required: bool


@dataclass(frozen=True)
class ParamProblem:
    param: str | None  # None: a problem with the whole mapping
    message: str
    suggestion: str | None = None


def _callable_for_signature(factory: Callable[..., Any]) -> Callable[..., Any]:
    return factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]


@lru_cache(maxsize=None)
def _signature(factory: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    sig = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(_callable_for_signature(factory), include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable hints (e.g. optional heavy types): skip type checks
        hints = {}
    return sig, hints


def describe_params(factory: Callable[..., Any]) -> list[ParamInfo]:
    """The keyword parameters a factory takes, for ``harness list`` and the docs."""
    sig, hints = _signature(factory)
    out = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
            continue
        ann = hints.get(p.name, p.annotation)
        ref = part_ref(ann)
        if ref is not None:
            ann_text = f"{'list of ' if ref.many else ''}{ref.kind} part"
        else:
            ann_text = "" if ann is _MISSING else (ann if isinstance(ann, str) else _type_name(ann))
        out.append(ParamInfo(p.name, ann_text, None if p.default is _MISSING else p.default, p.default is _MISSING))
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Annotated:  # PositiveInt -> "int >= 1"
        base, *extras = typing.get_args(tp)
        return " ".join([_type_name(base), *filter(None, map(_bound_text, extras))])
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def _bound_text(extra: Any) -> str | None:
    """One Annotated constraint as shown by ``harness list``: ">= 1", "< 0.5", "odd" (a Predicate's name)."""
    for cls, attr, op in ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
                          (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<")):
        if isinstance(extra, cls):
            return f"{op} {getattr(extra, attr)}"
    if isinstance(extra, annotated_types.Predicate):
        return getattr(extra.func, "__qualname__", None)
    return None


@lru_cache(maxsize=None)
def _adapter(tp: Any):  # pydantic is imported only when a spec is validated
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def check_params(factory: Callable[..., Any], params: dict[str, Any]) -> tuple[dict[str, Any], list[ParamProblem]]:
    """Validate ``params`` for ``factory``; returns the (possibly normalised) params and the problems.

    pydantic is imported only when a value has a type to check (``harness score`` with no option
    never pays for it)."""
    sig, hints = _signature(factory)
    accepted = {
        n: p for n, p in sig.parameters.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    problems: list[ParamProblem] = []
    clean: dict[str, Any] = {}
    for key, value in params.items():
        if key not in accepted and not takes_any:
            close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
            problems.append(ParamProblem(key, "unknown parameter", close[0] if close else None))
            continue
        tp = hints.get(key)
        if tp is None or tp is Any or part_ref(tp) is not None:  # nested parts: validated by the spec loader
            clean[key] = value
            continue
        from pydantic import ValidationError

        try:
            clean[key] = _adapter(tp).validate_python(value, strict=_strict_ok(tp))
        except ValidationError as exc:
            err, loc = _union_error(tp, exc.errors(), value)
            where = ".".join(str(x) for x in loc)
            detail = err.get("msg", str(exc))
            problems.append(
                ParamProblem(key, f"{detail}{' at ' + where if where else ''} (got {value!r})", _closest_literal(tp, value))
            )
        except Exception as exc:  # noqa: BLE001 - a type pydantic cannot handle: accept the value as is
            clean[key] = value
            del exc
    for name, p in accepted.items():
        if p.default is _MISSING and name not in params:
            problems.append(ParamProblem(name, "missing required parameter"))
    return clean, problems


def _union_error(tp: Any, errors: list[dict[str, Any]], value: Any) -> tuple[dict[str, Any], tuple]:
    """The error to report and its location. For a union of several types (``int | dict[...]``)
    pydantic reports one error per branch, each located under the branch's name: report the branch
    of the value's own kind (a mapping's from the ``dict[...]`` branch), without that name."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    branches = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) not in (typing.Union, getattr(__import__("types"), "UnionType", None)) or len(branches) < 2:
        return errors[0], tuple(errors[0].get("loc", ()))
    family = "dict[" if isinstance(value, dict) else "list[" if isinstance(value, list) else None
    chosen = next((e for e in errors if family and str((e.get("loc") or ("",))[0]).startswith(family)), errors[0])
    return chosen, tuple(chosen.get("loc", ()))[1:]


def _strict_ok(tp: Any) -> bool:
    """Strict mode refuses '3' for int, but would also refuse a YAML list for a tuple or a str for a
    Path; use lax mode for those container / path annotations."""
    text = str(tp)  # (strict mode already takes an int for a float, and refuses the string '1e-3')
    return not any(t in text for t in ("tuple", "Tuple", "Path", "Sequence"))


def _closest_literal(tp: Any, value: Any) -> str | None:
    """For a mistyped choice ('gm' for Literal['gem', 'mean']) suggest the closest allowed value."""
    if not isinstance(value, str):
        return None
    choices: list[str] = []
    stack = [tp]
    while stack:
        t = stack.pop()
        if typing.get_origin(t) is typing.Literal:
            choices += [a for a in typing.get_args(t) if isinstance(a, str)]
        else:
            stack += list(typing.get_args(t))
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    return close[0] if close else None
