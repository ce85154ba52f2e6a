"""Read a queue directory written by execo's ``ParamSweeper``, safely.

execo keeps its state as pickles: ``sweeps`` (the set of all params), ``done`` (one
pickle per done param, appended) and ``inprogress`` (the set of params in progress).
Unpickling runs whatever the file names, so a pickle read from a shared directory could
run code: :class:`PlainDataUnpickler` builds plain data only (numbers, strings, bytes,
tuples, lists, sets, dicts and execo's ``HashableDict``, read as a dict) and refuses
everything else with an :class:`~minionize.errors.EngineError`.

Plain data can still be hostile: a few hundred bytes that reuse one memoized tuple at
every level describe 2**30 values, which hashing, copying or printing then expand (41 s
and 1.7 GiB were measured), and a 50,000-deep tuple overflows every recursive walk.
Before anything is built, :func:`check_pickle` reads the opcodes (``pickletools``, time
and memory linear in the file) and refuses a pickle whose values, once shared references
are expanded, would exceed :data:`MAX_DEPTH` levels or
``EXPANSION_PER_OPCODE x opcodes + EXPANSION_ALLOWANCE`` values, or that refers to itself.
The callables a pickle may name are wrapped so that none allocates from a number
(``bytes(8 << 30)``).
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import pickletools
from typing import IO, Any, Callable

from ...errors import EngineError
from ...params import canonical_json

EXECO_FILES = ("sweeps", "done", "inprogress")


class ParamDict(dict):  # type: ignore[type-arg]
    """A mapping param that can sit in a set while unpickling, as execo's HashableDict."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something other than plain data."""


_SCALAR_TYPES = (str, bytes, int, float, bool, complex)
_MAX_TEXT = 4300  # digits Python itself accepts in int("...")


def _scalar_only(kind: type) -> Callable[..., Any]:
    """``kind(*args)`` for scalar arguments that cannot make it allocate from a number
    (``bytes(8 << 30)``) or walk a structure (``str(a_memo_bomb)``)."""

    def build(*args: Any) -> Any:
        for arg in args:
            if not isinstance(arg, _SCALAR_TYPES) or (kind is bytes and isinstance(arg, int)) or (
                isinstance(arg, (str, bytes)) and len(arg) > _MAX_TEXT and kind is not bytes
                and kind is not str
            ):
                raise RefusedPickle(f"builtins.{kind.__name__} of {type(arg).__name__}")
        return kind(*args)

    return build


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` for the containers execo pickles at protocols 0 and 1."""
    if base not in (object, dict, ParamDict, list, set, frozenset, tuple):
        raise RefusedPickle(f"copyreg._reconstructor of {getattr(base, '__name__', base)!r}")
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "dict"): ParamDict,
    ("builtins", "int"): _scalar_only(int),
    ("builtins", "float"): _scalar_only(float),
    ("builtins", "str"): _scalar_only(str),
    ("builtins", "bytes"): _scalar_only(bytes),
    ("builtins", "bool"): _scalar_only(bool),
    ("builtins", "complex"): _scalar_only(complex),
    ("copyreg", "_reconstructor"): _reconstructor,
    ("execo_engine.sweep", "HashableDict"): ParamDict,
    ("execo_engine.utils", "HashableDict"): ParamDict,
}


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that only builds plain data; anything else raises RefusedPickle."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, which Python 3 also writes at protocols 0 to 2.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None


def is_execo_directory(directory: str) -> bool:
    """True when ``directory`` holds execo's ``sweeps`` or ``done`` file."""
    return any(os.path.isfile(os.path.join(directory, name)) for name in ("sweeps", "done"))


def _refused(path: str, what: str) -> EngineError:
    return EngineError(
        f"{path} holds a pickle of {what}, which minionize refuses to load (unpickling it "
        "could run code or exhaust memory): only plain data and execo's HashableDict are "
        "imported; remove the file or rebuild the queue with minion-queue fill"
    )


#: Deepest nesting of a param read from an execo pickle.
MAX_DEPTH = 100
#: Values a pickle may describe once shared references are expanded, per opcode...
EXPANSION_PER_OPCODE = 20
#: ... plus this many.
EXPANSION_ALLOWANCE = 1_000_000


class HostilePickle(ValueError):
    """Plain data that would take unbounded time or memory to use."""


#: What an opcode may push as a leaf: a value that holds no other and never will. Every
#: other value is a node of its own (even an empty one), so that what is added to it
#: later counts wherever the memo hands it out.
_SCALARS = {"int", "int_or_bool", "bool", "float", "str", "bytes", "bytes_or_str", "None",
            "bytearray"}  # pickletools' names of the values opcodes push
_LEAF = -1

# What each opcode does to the stack, decided once (the scan runs per opcode).
_SCALAR, _SKIP, _STOP, _MARK, _POP, _POP_MARK, _DUP, _PUT, _MEMOIZE, _GET = range(10)
_APPEND, _SETITEM, _MUTATE_MARK, _MARKED, _FIXED = range(10, 15)


def _opcode_kind(op: pickletools.OpcodeInfo) -> int:
    named = {
        "PROTO": _SKIP, "FRAME": _SKIP, "STOP": _STOP, "MARK": _MARK, "POP": _POP,
        "POP_MARK": _POP_MARK, "DUP": _DUP, "PUT": _PUT, "BINPUT": _PUT,
        "LONG_BINPUT": _PUT, "MEMOIZE": _MEMOIZE, "GET": _GET, "BINGET": _GET,
        "LONG_BINGET": _GET, "APPEND": _APPEND, "BUILD": _APPEND, "SETITEM": _SETITEM,
        "APPENDS": _MUTATE_MARK, "SETITEMS": _MUTATE_MARK, "ADDITEMS": _MUTATE_MARK,
    }
    if op.name in named:
        return named[op.name]
    if not op.stack_before and len(op.stack_after) == 1 and op.stack_after[0].name in _SCALARS:
        return _SCALAR
    return _MARKED if pickletools.markobject in op.stack_before else _FIXED


_KINDS = {op.code: _opcode_kind(op) for op in pickletools.opcodes}


def check_pickle(stream: IO[bytes], allowance: int = EXPANSION_ALLOWANCE) -> tuple[int, int]:
    """Read one pickle's opcodes from ``stream`` (up to its STOP) without building
    anything, and raise :class:`HostilePickle` if its values nest deeper than
    :data:`MAX_DEPTH`, refer to themselves, or expand past ``allowance`` plus
    :data:`EXPANSION_PER_OPCODE` per opcode; ``ValueError`` if it is not a pickle.
    Linear in the pickle's size. Returns (opcodes read, values its result expands to),
    so that a file of many pickles shares one allowance."""
    mark = object()
    children: list[list[int]] = []  # node -> the nodes or leaves it holds
    stack: list[Any] = []
    push = stack.append
    memo: dict[int, Any] = {}
    opcodes = 0

    def pop_to_mark() -> list[int]:
        for index in range(len(stack) - 1, -1, -1):
            if stack[index] is mark:
                items = stack[index + 1:]
                del stack[index:]
                return items
        raise ValueError("a MARK is missing")

    def new_node(items: list[int]) -> int:
        children.append(items)
        return len(children) - 1

    result: Any = _LEAF
    for opcode, arg, _ in pickletools.genops(stream):
        opcodes += 1
        kind = _KINDS[opcode.code]
        if kind == _SCALAR:
            push(_LEAF)
        elif kind == _GET:
            try:
                push(memo[int(arg or 0)])
            except KeyError:
                raise ValueError(f"memo key {arg} was never stored") from None
        elif kind == _MEMOIZE:
            memo[len(memo)] = stack[-1]
        elif kind == _PUT:
            memo[int(arg or 0)] = stack[-1]
        elif kind == _MARK:
            push(mark)
        elif kind == _SKIP:
            continue
        elif kind == _STOP:
            result = stack.pop() if stack else _LEAF
            break
        elif kind == _POP:
            stack.pop()
        elif kind == _POP_MARK:
            pop_to_mark()
        elif kind == _DUP:
            push(stack[-1])
        elif kind in (_APPEND, _SETITEM, _MUTATE_MARK):
            if kind == _APPEND:
                items = [stack.pop()]
            elif kind == _SETITEM:
                items = [stack.pop(), stack.pop()]
            else:
                items = pop_to_mark()
            target = stack[-1]
            if target is mark or target == _LEAF or mark in items:
                raise ValueError(f"{opcode.name} on a value that cannot hold others")
            children[target].extend(items)
        else:
            before = opcode.stack_before
            if kind == _MARKED:
                items = pop_to_mark()
                for _ in range(before.index(pickletools.markobject)):
                    items.append(stack.pop())
            else:
                items = [stack.pop() for _ in before]
            if mark in items:
                raise ValueError(f"{opcode.name} found a MARK where a value belongs")
            for _ in opcode.stack_after:
                push(new_node(items))
    else:
        raise ValueError("the pickle ends before its STOP")
    limit = EXPANSION_PER_OPCODE * opcodes + allowance
    size = _check_expansion(children, limit)
    return opcodes, 1 if result == _LEAF or result is mark else size[result]


def _check_expansion(children: list[list[int]], limit: int) -> list[int]:
    """Expanded size of every node (memoized, without recursion); HostilePickle past
    ``limit`` values or :data:`MAX_DEPTH` levels, or for a node that holds itself."""
    size = [0] * len(children)
    depth = [0] * len(children)
    state = [0] * len(children)  # 0 unseen, 1 on the path, 2 measured
    for root in range(len(children)):
        if state[root]:
            continue
        path = [root]
        cursor = [0]  # how far each node on the path has looked at its children
        state[root] = 1
        while path:
            node, kids = path[-1], children[path[-1]]
            index = cursor[-1]
            while index < len(kids) and (kids[index] == _LEAF or state[kids[index]] == 2):
                index += 1
            cursor[-1] = index
            if index < len(kids):
                pending = kids[index]
                if state[pending] == 1:
                    raise HostilePickle("a value that holds itself")
                state[pending] = 1
                path.append(pending)
                cursor.append(0)
                continue
            path.pop()
            cursor.pop()
            total, deepest = 1, 0
            for child in children[node]:
                if child == _LEAF:
                    total += 1
                else:
                    total += size[child]
                    deepest = max(deepest, depth[child])
            size[node], depth[node], state[node] = min(total, limit + 1), deepest + 1, 2
            if depth[node] > MAX_DEPTH:
                raise HostilePickle(f"values nested deeper than {MAX_DEPTH} levels")
            if size[node] > limit:
                raise HostilePickle(_too_many(limit))
    return size


def _too_many(limit: int) -> str:
    return f"values that reuse one another to describe more than {limit:,} values (a memo bomb)"


def _load_all(path: str, single: bool) -> list[Any]:
    """Every pickle in ``path`` (a truncated last one, as a crash leaves, is ignored)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc}") from None
    stream = io.BytesIO(data)
    values: list[Any] = []
    total_opcodes = described = 0  # one allowance for every pickle of the file
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            opcodes, size = check_pickle(
                stream, EXPANSION_ALLOWANCE + EXPANSION_PER_OPCODE * total_opcodes - described
            )
            total_opcodes, described = total_opcodes + opcodes, described + size
            limit = EXPANSION_ALLOWANCE + EXPANSION_PER_OPCODE * total_opcodes
            if described > limit:
                raise HostilePickle(_too_many(limit))
            stream.seek(start)
            values.append(PlainDataUnpickler(stream).load())
        except RefusedPickle as exc:
            raise _refused(path, str(exc)) from None
        except HostilePickle as exc:
            raise EngineError(
                f"{path} holds {exc}, which minionize refuses to load: remove the file or "
                "rebuild the queue with minion-queue fill"
            ) from None
        except (MemoryError, RecursionError, OverflowError) as exc:
            raise EngineError(f"{path} cannot be read within bounds ({exc!r})") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError) as exc:
            if values or not single:
                break  # a crash cut the last record, as execo itself tolerates
            raise EngineError(f"{path} is not a readable execo pickle ({exc})") from None
        if single:
            break
    return values


def plain(value: Any) -> Any:
    """``value`` with tuples and sets as lists and mappings as plain dicts (JSON-ready)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [plain(item) for item in _ordered(value)]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, complex):
        return str(value)
    return value


def _ordered(values: Any) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=canonical_json)


def _keyed(path: str, values: list[Any], into: dict[str, Any]) -> None:
    """Add each value, as plain data, under its canonical JSON (its identity in a queue)."""
    for value in values:
        param = plain(value)
        try:
            into[canonical_json(param)] = param
        except (TypeError, ValueError) as exc:
            raise EngineError(
                f"{path} holds a param that JSON cannot hold exactly ({exc}: "
                f"{repr(param)[:80]}); NaN and infinities cannot go into a queue"
            ) from None


def read_execo_directory(directory: str) -> tuple[list[Any], list[Any]]:
    """(params not done, params done) of an execo ParamSweeper directory, as plain data.

    Params in progress count as not done: their minions are gone or will be. Params are
    compared by their canonical JSON, so a list param (which no Python set can hold) is
    read like any other.
    """
    everything: dict[str, Any] = {}
    for name in ("sweeps", "inprogress"):
        path = os.path.join(directory, name)
        for value in _load_all(path, single=True):
            if not isinstance(value, (set, frozenset, list, tuple)):
                raise EngineError(
                    f"{path}: an execo set of params was expected, found {type(value).__name__}"
                )
            _keyed(path, list(value), everything)
    done: dict[str, Any] = {}
    path = os.path.join(directory, "done")
    _keyed(path, _load_all(path, single=False), done)
    todo = [param for key, param in everything.items() if key not in done]
    return _ordered(todo), _ordered(list(done.values()))
