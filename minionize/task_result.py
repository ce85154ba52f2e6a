"""A task's result, as the queue keeps it: the JSON text of what a function returned.

The queue holds JSON so that any language reads it (``minion-queue results --json``).
A value JSON cannot hold exactly (an object, a set, NaN, a float infinity, a dict key
that is not a string: JSON would make ``{1: "one"}`` ``{"1": "one"}``), nested deeper
than :data:`MAX_DEPTH` (a reader could not read it back), or whose text is larger than
``MINION_RESULT_MAX_BYTES``, is not stored: the attempt fails with a reason that says
why (:class:`UnstorableResult`), never a crash and never a result silently changed.
The one conversion: a tuple is stored as a list (JSON has no tuples), and reads back
as a list. A function that returns None stores nothing. A queue's results are read back by
:func:`minionize.engines.results`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

#: The largest result text stored by default (MINION_RESULT_MAX_BYTES).
DEFAULT_MAX_BYTES = 1 << 20
#: The deepest nesting of lists and dicts stored: a reader decodes one level per frame
#: of its stack, and reads from deep in its own (the default limit is 1000 frames).
MAX_DEPTH = 256
_CONTAINERS = (list, tuple, dict)

_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode
#: For a string that is not Unicode text (a lone surrogate): escaped, still exact.
_ENCODE_ASCII = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


class UnstorableResult(ValueError):
    """A result the queue cannot keep; its message is the failed attempt's reason."""


def encode_result(value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> Optional[str]:
    """The JSON text to store for ``value`` (None for None). Raises UnstorableResult."""
    if value is None:
        return None
    _check_shape(value)
    try:
        text = _ENCODE(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnstorableResult(
            f"the return value cannot be stored as JSON: {type(exc).__name__}: {exc} "
            "(return numbers, strings, lists, dicts, True/False or None)"
        ) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        text = _ENCODE_ASCII(value)
        size = len(text)
    if size > max_bytes:
        raise UnstorableResult(
            f"the return value is {size} bytes as JSON, more than the {max_bytes} the "
            "queue keeps (MINION_RESULT_MAX_BYTES): store large results in files and "
            "return their path"
        )
    return text


def _check_shape(value: Any) -> None:
    """Raise UnstorableResult for a dict key that is not a string (JSON would change
    it) or nesting deeper than MAX_DEPTH; without recursion, whatever the depth."""
    if not isinstance(value, _CONTAINERS):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            _refuse_circular(value)  # a circular value: its own error, below
            raise UnstorableResult(
                f"the return value cannot be stored as JSON: it is nested {_depth(value)} "
                f"deep, more than the {MAX_DEPTH} "
                "levels of lists and dicts the queue keeps (a reader could not read it back)"
            )
        if isinstance(container, dict):
            for key in container:
                if not isinstance(key, str):
                    raise UnstorableResult(
                        "the return value cannot be stored as JSON: TypeError: the dict key "
                        f"{repr(key)[:80]} is not a string, and JSON would make it one, changing the "
                        "value (use str keys)"
                    )
            items: Any = container.values()
        else:
            items = container
        stack.extend((item, depth + 1) for item in items if isinstance(item, _CONTAINERS))


def _depth(value: Any) -> int:
    """How deep ``value`` nests (iteratively; each container counted once)."""
    deepest, stack, seen = 0, [(value, 1)], set()
    while stack:
        container, depth = stack.pop()
        if id(container) in seen:
            continue
        seen.add(id(container))
        deepest = max(deepest, depth)
        items = container.values() if isinstance(container, dict) else container
        stack.extend((item, depth + 1) for item in items if isinstance(item, _CONTAINERS))
    return deepest


def _refuse_circular(value: Any) -> None:
    """Raise UnstorableResult if the encoder finds ``value`` circular."""
    try:
        _ENCODE(value)
    except ValueError as exc:
        raise UnstorableResult(
            f"the return value cannot be stored as JSON: {exc} (return numbers, strings, "
            "lists, dicts, True/False or None)"
        ) from None
    except RecursionError:
        pass


def decode_result(text: Optional[str]) -> Any:
    """A stored result as a value (None for none)."""
    return None if text is None else json.loads(text)

