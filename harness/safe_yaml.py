"""Bounded YAML: reading a spec file and parsing YAML text with limits on what it may cost.

A spec (or a ``--set`` value) is refused, with one line naming it, when it is not a regular file (a
FIFO would block forever, ``/dev/zero`` never ends), larger than :data:`MAX_SPEC_BYTES`, nested
deeper than :data:`MAX_DEPTH`, or when its aliases expand to more than :data:`MAX_NODES` values or
:data:`MAX_CHARS` characters of scalars: ``a: &a [x, x]; b: &b [*a, *a]; ...`` is a few
hundred bytes that a walk, a hash or a JSON dump would expand exponentially ("billion laughs").
Depth is checked on the parser's event stream (an explicit stack, no recursion) before the node
tree is composed, so a deep file never reaches PyYAML's recursive composer.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from harness.errors import SpecError, SpecIssue, UserError
from harness.files import NotRegularFile, open_regular
from harness.messages import short_path

#: Largest spec file read (bytes); real specs are about 1 KB.
MAX_SPEC_BYTES = 1024 * 1024
#: Deepest nesting of mappings and sequences.
MAX_DEPTH = 64
#: Largest document with every alias expanded: values (scalars and containers), scalar characters.
MAX_NODES = 100_000
MAX_CHARS = 4 * MAX_SPEC_BYTES


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading YAML 1.2 floats without a dot (``1e-6``, ``2E+3``): YAML 1.1,
    which PyYAML follows, makes them strings, and ``fpr: 1e-6`` would be refused as "not a number"."""


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_text(path: str | os.PathLike[str], *, what: str = "spec", max_bytes: int = MAX_SPEC_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; anything else is a UserError.

    Opened with :func:`harness.files.open_regular` (a FIFO without a writer must not hang us) and read
    to ``max_bytes + 1`` bytes at most (a file in /proc reports size 0 and may not end)."""
    name = short_path(path)
    try:
        fh = open_regular(path)
    except FileNotFoundError:
        raise UserError(f"{name}: {what} file not found") from None
    except NotRegularFile as exc:
        raise UserError(f"{name}: {exc.strerror}, expected a {what} file") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot read {what}: {exc.strerror}") from None
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise UserError(f"{name}: {what} file is {size:,} bytes, over the {max_bytes:,}-byte limit")
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise UserError(f"{name}: cannot read {what}: {exc.strerror}") from None
    size = len(data)
    if size > max_bytes:
        raise UserError(f"{name}: {what} file is over the {max_bytes:,}-byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{name}:{line}: {what} is not valid UTF-8 text") from None


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document within the limits: returns its node tree (for line numbers) and the
    data built from it. Raises SpecError with ``source:line`` on invalid or too costly YAML."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([SpecIssue(source, "", f"YAML text is over the {MAX_SPEC_BYTES:,}-character limit")])
    _check_depth(text, source)
    loader = SpecLoader(text)
    try:  # one parse: the node tree (for line numbers) and the data built from it
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, source)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise _invalid(exc, source) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue(source, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return node, data


def load_value(text: str, source: str) -> Any:
    """The data of a small YAML text (a ``--set`` value), within the same limits."""
    return compose(text, source)[1]


def _invalid(exc: yaml.MarkedYAMLError, source: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}" if mark else source
    return SpecError([SpecIssue(where, "", f"invalid YAML: {exc.problem or exc}")])


def _check_depth(text: str, source: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    raise SpecError([SpecIssue(f"{source}:{line}" if line else source, "",
                                               f"YAML nested more than {MAX_DEPTH} levels deep")])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise _invalid(exc, source) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecIssue(source, "", f"invalid YAML: {exc}")]) from None


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Size of the document with aliases expanded, computed on the node graph (shared nodes once,
    memoised, with an explicit stack). A node inside itself (``a: &x [*x]``) is not counted here: the
    spec walker reports it with its path."""
    sizes: dict[int, tuple[int, int]] = {}  # node -> (values, characters) once expanded
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, True)]  # (node, entering?)
    while stack:
        node, enter = stack.pop()
        key = id(node)
        if enter:
            if key in sizes or key in active:
                continue
            active.add(key)
            stack.append((node, False))
            stack.extend((c, True) for c in _children(node) if id(c) not in sizes and id(c) not in active)
            continue
        active.discard(key)
        nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        for c in _children(node):
            n, k = sizes.get(id(c), (0, 0))  # (0, 0): a recursive alias
            nodes, chars = nodes + n, chars + k
        if nodes > MAX_NODES or chars > MAX_CHARS:
            what = f"{MAX_NODES:,} values" if nodes > MAX_NODES else f"{MAX_CHARS:,} characters"
            raise SpecError([SpecIssue(f"{source}:{node.start_mark.line + 1}", "",
                                       f"YAML document has more than {what} once aliases are expanded")])
        sizes[key] = (nodes, chars)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
