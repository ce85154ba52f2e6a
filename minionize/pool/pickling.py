"""How the pool pickles what crosses to the workers and back.

* Functions from a module the worker can import travel by reference (cloudpickle's
  rule: a module other than ``__main__``); the others (lambdas, closures, ``__main__``'s)
  by value, their code objects marshalled whole, so that they keep their file name
  (cloudpickle 3.1 renames it ``<dynamic-code>``), with the source lines of those files
  as the caller has them: a worker's traceback shows the file, the line and its text,
  even for code with no file the worker could read (a notebook cell).
* What cannot be pickled raises an error of the kind pickle raised (``TypeError``,
  ``pickle.PicklingError``), as multiprocessing does, naming what could not be sent.
* A chunk's outcomes are pickled one by one, so that a value that cannot be unpickled
  is a :class:`RemoteError` of its item in its own call, never an error of another;
  a chunk whose items all returned plain values (numbers, strings, bytes, and lists,
  tuples, dicts and sets of them: nothing whose unpickling runs code) travels as one
  pickle of its values (:func:`plain_values`), read back as :class:`Values`.
"""

from __future__ import annotations

import io
import linecache
import marshal
import pickle
import types
from collections.abc import Iterator
from typing import Any, Callable, Optional, Union

from .errors import PoolEncodingError, PoolPicklingError, PoolTypeError, RemoteError

#: Source lines carried with a function, at most (characters, all files together).
MAX_SOURCE_CHARS = 4 * 1024 * 1024

_pickler: Optional[type] = None


def _load_code(data: bytes) -> types.CodeType:
    code: types.CodeType = marshal.loads(data)
    return code


def _pickler_class() -> type:
    """cloudpickle's Pickler, but code objects marshalled whole (their file name kept),
    and the file names of the code it pickled remembered."""
    global _pickler
    if _pickler is None:
        import cloudpickle

        class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
            def __init__(self, file: io.BytesIO) -> None:
                super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
                self.files: set[str] = set()

            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, types.CodeType):
                    self.files.add(obj.co_filename)
                    return (_load_code, (marshal.dumps(obj),))
                return super().reducer_override(obj)

        _pickler = Pickler
    return _pickler


def _dumps(value: Any) -> tuple[bytes, set[str]]:
    buffer = io.BytesIO()
    pickler = _pickler_class()(buffer)
    pickler.dump(value)
    return buffer.getvalue(), pickler.files


def dumps(value: Any) -> bytes:
    """``value`` pickled (cloudpickle, code objects with their file names)."""
    return _dumps(value)[0]


def sending_error(exc: Exception, what: str) -> Exception:
    """The error to raise when ``what`` cannot be pickled: of the kind pickle raised,
    naming ``what`` (raise it ``from exc``)."""
    message = f"cannot send {what} to the workers: {type(exc).__name__}: {exc}"
    if isinstance(exc, pickle.PicklingError):
        return PoolPicklingError(message)
    if isinstance(exc, TypeError):
        return PoolTypeError(message)
    try:
        return type(exc)(message)
    except Exception:
        return exc


def dump(value: Any, what: str) -> bytes:
    """``value`` pickled, or the error of :func:`sending_error`."""
    try:
        return dumps(value)
    except Exception as exc:
        raise sending_error(exc, what) from exc


def dump_function(func: Callable[..., Any]) -> bytes:
    """The function pickled, with the source lines of the code it carries by value."""
    what = getattr(func, "__qualname__", None) or repr(func)
    try:
        data, files = _dumps(func)
    except Exception as exc:
        raise sending_error(exc, what) from exc
    lines: dict[str, list[str]] = {}
    size = 0
    for name in sorted(files):
        text = linecache.getlines(name)
        size += sum(map(len, text))
        if text and size <= MAX_SOURCE_CHARS:
            lines[name] = text
    return pickle.dumps((data, lines))


def load_function(data: bytes) -> Any:
    """In a worker: the function, its source lines known to ``linecache`` under their
    file names (the caller's text: what it ran)."""
    payload, lines = pickle.loads(data)
    for name, text in lines.items():
        linecache.cache[name] = (sum(map(len, text)), None, text, name)
    return pickle.loads(payload)


#: One item's outcome as it travels: (ok, the pickled value or exception, the worker's
#: traceback text, the value's type name).
Outcome = tuple[bool, bytes, str, str]


def encode_outcome(index: int, ok: bool, value: Any, text: str) -> Outcome:
    """In a worker: an item's value (or exception) pickled. A result that cannot be
    pickled, or an exception that would not survive the trip, becomes a
    :class:`PoolEncodingError` (a ``MaybeEncodingError``) saying so (with the worker's traceback)."""
    name = type(value).__qualname__
    try:
        try:
            # Plain pickle first (fast): it pickles by name only what it checked is that
            # very object under that name; the rest (a class made by value) by cloudpickle.
            blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception:
            blob = dumps(value)
        if not ok:
            pickle.loads(blob)
    except Exception as exc:
        if ok:
            message = f"the result of item {index} ({name}) cannot be pickled: {exc}"
        else:
            message = f"{type(value).__module__}.{name}: {_text(value)}"
        error = PoolEncodingError(message, text, _repr(exc), _repr(value))
        return (False, pickle.dumps(error), text, "PoolEncodingError")
    return (ok, blob, text, name)


def _repr(value: Any) -> str:
    try:
        return repr(value)[:1000]
    except Exception:
        return f"<{type(value).__qualname__} (its repr cannot be shown)>"


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return "(its text cannot be shown)"


def decode_outcome(index: int, outcome: Outcome) -> tuple[bool, Any, str]:
    """In the caller: ``(ok, value or exception, traceback text)`` of an item; a value
    that cannot be unpickled here is a RemoteError of that item."""
    ok, blob, text, name = outcome
    try:
        return ok, pickle.loads(blob), text
    except Exception as exc:
        what = "result" if ok else "exception"
        error = RemoteError(f"the {what} of item {index} ({name}) could not be unpickled: "
                            f"{type(exc).__name__}: {exc}", text)
        return False, error, text


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    """Pickle's own pickler that gives up at the first object that is not a plain value
    (pickle asks ``reducer_override`` about every object but those)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


def plain_values(values: Any) -> Optional[bytes]:
    """``values`` as one pickle, when they are all plain (None otherwise): nothing in it
    runs code when it is read."""
    buffer = io.BytesIO()
    try:
        _PlainPickler(buffer).dump(values)
    except Exception:  # _NotPlain, or a value pickle refuses (a recursive list)
        return None
    return buffer.getvalue()


def dump_items(items: list[Any], what: str) -> bytes:
    """A chunk's items pickled: by pickle itself when they are plain values (fast), else
    as :func:`dump` does."""
    data = plain_values(items)
    return data if data is not None else dump(items, what)


class Values(list):  # type: ignore[type-arg]
    """A chunk's values, every item returned (read from :func:`plain_values`' pickle)."""


#: A chunk's outcomes as the caller keeps them: per item, or its plain values.
Outcomes = Union[list[Outcome], Values]


def failures(outcomes: Outcomes) -> int:
    return 0 if isinstance(outcomes, Values) else sum(1 for outcome in outcomes if not outcome[0])


def decode_chunk(start: int, outcomes: Outcomes) -> Iterator[tuple[bool, Any, str]]:
    """``(ok, value or exception, traceback text)`` of each item of a chunk."""
    if isinstance(outcomes, Values):
        for value in outcomes:
            yield True, value, ""
        return
    for j, outcome in enumerate(outcomes):
        yield decode_outcome(start + j, outcome)
