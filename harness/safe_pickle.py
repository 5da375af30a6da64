"""A restricted unpickler for plain-data pickles (revisitop ground truth files).

Plain containers and numbers (dict, list, tuple, str, bytes, int, float, bool, None) are built by
pickle opcodes without ever resolving a global, so this unpickler refuses *every* global except a
few harmless builtin types, and those only through checked constructors. A pickle that tries to
build anything else (an object, a function call such as ``os.system``) is rejected before anything
runs. Protocols 0-5 are read alike: the Python 2 names protocols 0-2 use (``__builtin__.set``,
``_codecs.encode`` for bytes) map to the same constructors.

Cost is bounded by the size of the pickle, not by what it builds. A pickle's memo lets a few
hundred bytes reference one container from many places (``[[x] * 10] * 10 ...``): the object graph
stays small, but a walk, a validation or a JSON dump of it would expand exponentially. So

- every constructor call and every hash of a dict key or set element (a tuple's hash walks it, and
  is not cached) is charged to a budget proportional to the pickle's size;
- the loaded value, with shared references expanded, may hold at most :data:`EXPANSION` values
  and characters per byte of pickle (plus a small allowance): more is refused, in time linear in
  the number of *distinct* objects.

The unpickler is CPython's pure-Python one (``pickle._Unpickler``) with those opcodes overridden:
the C one offers no hook for them. Revisitop's 0.5 MB files load in a fraction of a second.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, Callable

from harness.errors import SubmissionError

#: Refuse pickles larger than this (bytes); revisitop's are about 0.5 MB.
MAX_PICKLE_BYTES = 256 * 1024 * 1024
#: Values (and characters) the loaded data may hold per byte of pickle once shared references are
#: expanded. An unshared value costs at least one opcode byte, so honest files stay far below it.
EXPANSION = 4
_ALLOWANCE = 1 << 16


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def charge(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise pickle.UnpicklingError(
                "the pickle builds far more than its size (shared references or constructors expanding it)"
            )


def _sized(x: Any) -> int:
    try:
        return len(x)
    except TypeError:
        raise pickle.UnpicklingError(f"unexpected constructor argument of type {type(x).__name__}") from None


def _iterable_arg(args: tuple, name: str) -> Any:
    if not args:
        return ()
    if len(args) != 1 or not isinstance(args[0], (list, tuple, set, frozenset, dict)):
        raise pickle.UnpicklingError(f"{name}() takes one list, tuple, set or dict here")
    return args[0]


def _byte_source(args: tuple, name: str, budget: _Budget) -> Any:
    """Arguments of bytes()/bytearray() that copy data, never ``bytearray(n)`` (n zero bytes)."""
    if not args:
        return b""
    src = args[0]
    if len(args) == 2 and isinstance(src, str) and args[1] in ("latin1", "latin-1", "latin_1"):
        budget.charge(len(src))
        return src.encode("latin-1")
    if len(args) == 1 and isinstance(src, (bytes, bytearray, list, tuple)):
        budget.charge(len(src))
        return src
    raise pickle.UnpicklingError(f"{name}() is allowed on bytes, a list of ints or a latin-1 string only")


def _make_constructors(unpickler: "_PlainDataUnpickler") -> dict[tuple[str, str], Callable[..., Any]]:
    budget, keys = unpickler.budget, unpickler.charge_keys

    def make_set(*args: Any) -> set:
        items = _iterable_arg(args, "set")
        keys(items)
        return set(items)

    def make_frozenset(*args: Any) -> frozenset:
        items = _iterable_arg(args, "frozenset")
        keys(items)
        return frozenset(items)

    def make_ordered_dict(*args: Any) -> collections.OrderedDict:
        items = _iterable_arg(args, "OrderedDict")
        budget.charge(_sized(items) + 1)
        pairs = list(items.items()) if isinstance(items, dict) else list(items)
        if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise pickle.UnpicklingError("OrderedDict() takes (key, value) pairs")
        keys([k for k, _ in pairs])
        return collections.OrderedDict(pairs)

    def make_complex(*args: Any) -> complex:
        if len(args) > 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise pickle.UnpicklingError("complex() takes two numbers here")
        budget.charge(1)
        return complex(*args)

    def make_bytes(*args: Any) -> bytes:
        return bytes(_byte_source(args, "bytes", budget))

    def make_bytearray(*args: Any) -> bytearray:
        return bytearray(_byte_source(args, "bytearray", budget))

    def encode(text: Any = "", encoding: str = "utf-8") -> bytes:  # protocols 0-2 pickle bytes as this call
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "latin_1"):
            raise pickle.UnpicklingError("_codecs.encode() is allowed on a latin-1 string only")
        budget.charge(len(text))
        return text.encode("latin-1")

    return {
        ("builtins", "set"): make_set,
        ("builtins", "frozenset"): make_frozenset,
        ("builtins", "complex"): make_complex,
        ("builtins", "bytes"): make_bytes,
        ("builtins", "bytearray"): make_bytearray,
        ("collections", "OrderedDict"): make_ordered_dict,
        ("_codecs", "encode"): encode,
    }


#: Python 2 names that protocols 0-2 write (Python 3 writes them too, for compatibility).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

_Base = pickle._Unpickler  # type: ignore[attr-defined]  # the pure-Python unpickler: its opcodes can be overridden


class _PlainDataUnpickler(_Base):
    dispatch = dict(_Base.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.budget = _Budget(EXPANSION * len(data) + _ALLOWANCE)
        self._constructors = _make_constructors(self)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        module = _PY2_MODULES.get(module, module)
        factory = self._constructors.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name}: only plain data is allowed")
        return factory

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids: only plain data is allowed")

    def charge_keys(self, items: Any) -> None:
        """Charge the hashing of ``items`` (dict keys, set elements): a tuple's hash walks the whole
        tuple, shared parts again each time, and is never cached."""
        budget = self.budget
        for item in items:
            if type(item) is not tuple:
                budget.charge(1)
                continue
            stack, n = [item], 0
            while stack:
                x = stack.pop()
                n += 1
                if type(x) is tuple:
                    stack.extend(x)
                if n > budget.left:
                    budget.charge(n)
            budget.charge(n)

    # -- opcodes that hash, or that only objects need --------------------------------------------------
    def load_setitem(self) -> None:
        self.charge_keys((self.stack[-2],))
        _Base.load_setitem(self)

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self.charge_keys(items[0::2])
        d = self.stack[-1]
        for i in range(0, len(items), 2):
            d[items[i]] = items[i + 1]

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.charge_keys(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def load_additems(self) -> None:
        items = self.pop_mark()
        self.charge_keys(items)
        target = self.stack[-1]
        if not isinstance(target, set):
            raise pickle.UnpicklingError("ADDITEMS on something that is not a set")
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.charge_keys(items)
        self.append(frozenset(items))

    def load_build(self) -> None:
        state = self.stack.pop()
        if state:  # plain containers carry no state; only objects do
            raise pickle.UnpicklingError("refusing object state (BUILD): only plain data is allowed")

    def load_newobj(self) -> None:
        raise pickle.UnpicklingError("refusing to create objects (NEWOBJ): only plain data is allowed")

    load_newobj_ex = load_newobj

    for _op, _fn in ((pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems), (pickle.DICT, load_dict),
                     (pickle.ADDITEMS, load_additems), (pickle.FROZENSET, load_frozenset), (pickle.BUILD, load_build),
                     (pickle.NEWOBJ, load_newobj), (pickle.NEWOBJ_EX, load_newobj_ex)):
        dispatch[_op[0]] = _fn
    del _op, _fn


def check_expansion(value: Any, limit: int, source: str = "<data>") -> None:
    """Refuse ``value`` if, with shared references expanded, it holds more than ``limit`` values or
    ``limit`` characters. Linear in the number of distinct objects (each is sized once)."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, True)]
    while stack:
        obj, enter = stack.pop()
        key = id(obj)
        if enter:
            if key in sizes or key in active:
                continue
            children = _children(obj)
            if children is None:  # a scalar
                sizes[key] = (1, len(obj) if isinstance(obj, (str, bytes, bytearray)) else 0)
                continue
            active.add(key)
            stack.append((obj, False))
            stack.extend((c, True) for c in children if id(c) not in sizes and id(c) not in active)
            continue
        active.discard(key)
        nodes, chars = 1, 0
        for c in _children(obj):
            n, k = sizes.get(id(c), (0, 0))  # (0, 0): a container inside itself, counted once
            nodes, chars = nodes + n, chars + k
        if nodes > limit or chars > limit:
            raise SubmissionError(
                source, f"expands to more than {limit:,} {'values' if nodes > limit else 'characters'} once "
                "shared references are followed (the file is far smaller)")
        sizes[key] = (nodes, chars)


def _children(obj: Any) -> Any:
    if isinstance(obj, dict):
        return [x for kv in obj.items() for x in kv]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    return None


def loads_plain(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` if it holds only plain data, at a cost bounded by its size; otherwise raise
    :class:`SubmissionError`."""
    try:
        value = _PlainDataUnpickler(data).load()
    except pickle.UnpicklingError as exc:
        raise SubmissionError(source, f"unsafe or invalid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError, OverflowError,
            RecursionError, UnicodeDecodeError, pickle.PickleError) as exc:
        from harness.messages import one_line

        raise SubmissionError(source, f"corrupt pickle: {type(exc).__name__}: {one_line(exc, 200)}") from None
    check_expansion(value, EXPANSION * len(data) + _ALLOWANCE, source)
    return value


def load_plain(path: str | Path, *, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Read and unpickle a plain-data pickle file with a size limit (the shared :func:`check_file` guard)."""
    from harness.submissions import check_file  # lazy: submissions imports this module lazily too

    check_file(path, max_bytes)
    return loads_plain(Path(path).read_bytes(), source=str(path))
