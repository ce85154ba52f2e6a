"""Read a queue directory written by execo's ``ParamSweeper``, safely.

execo keeps its state as pickles: ``sweeps`` (the set of all params), ``done`` (one
pickle per done param, appended) and ``inprogress`` (the set of params in progress).
Unpickling runs whatever the file names, so a pickle read from a shared directory could
run code: :class:`PlainDataUnpickler` builds plain data only (numbers, strings, bytes,
tuples, lists, sets, dicts and execo's ``HashableDict``, read as a dict) and refuses
everything else with an :class:`~minionize.errors.EngineError`.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
from typing import Any

from ..errors import EngineError

EXECO_FILES = ("sweeps", "done", "inprogress")


class ParamDict(dict):  # type: ignore[type-arg]
    """A mapping param that can sit in a set while unpickling, as execo's HashableDict."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something other than plain data."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "dict"): ParamDict,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bool"): bool,
    ("builtins", "complex"): complex,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
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
        "could run code): only plain data and execo's HashableDict are imported; remove "
        "the file or rebuild the queue with minion-queue fill"
    )


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
    while stream.tell() < len(data):
        try:
            values.append(PlainDataUnpickler(stream).load())
        except RefusedPickle as exc:
            raise _refused(path, str(exc)) from None
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
        return sorted(values, key=repr)


def read_execo_directory(directory: str) -> tuple[list[Any], list[Any]]:
    """(params not done, params done) of an execo ParamSweeper directory, as plain data.

    Params in progress count as not done: their minions are gone or will be.
    """
    sweeps = _load_all(os.path.join(directory, "sweeps"), single=True)
    done = _load_all(os.path.join(directory, "done"), single=False)
    inprogress = _load_all(os.path.join(directory, "inprogress"), single=True)
    everything: set[Any] = set()
    for group in (sweeps, inprogress):
        for value in group:
            if not isinstance(value, (set, frozenset, list, tuple)):
                raise EngineError(
                    f"{directory}: an execo set of params was expected, "
                    f"found {type(value).__name__}"
                )
            everything.update(value)
    done_set = set(done)
    todo = [plain(value) for value in _ordered(everything - done_set)]
    return todo, [plain(value) for value in _ordered(done_set)]
