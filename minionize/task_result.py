"""A task's result, as the queue keeps it: the JSON text of what a function returned.

The queue holds JSON so that any language reads it (``minion-queue results --json``).
A value JSON cannot hold exactly (an object, a set, NaN, a float infinity), or whose
text is larger than ``MINION_RESULT_MAX_BYTES``, is not stored: the attempt fails with
a reason that says why (:class:`UnstorableResult`), never a crash and never a result
silently changed. A function that returns None stores nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, Optional

#: The largest result text stored by default (MINION_RESULT_MAX_BYTES).
DEFAULT_MAX_BYTES = 1 << 20

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


def decode_result(text: Optional[str]) -> Any:
    """A stored result as a value (None for none)."""
    return None if text is None else json.loads(text)


def results(**variables: str) -> Iterator[dict[str, Any]]:
    """The results of the queue the settings name, in queue order: what
    ``minion-queue results --json`` prints, as dicts with ``id``, ``param`` and
    ``result`` (the value the task returned; None when it returned nothing).

    Settings come from the environment and ``.env``, as for a minion; keyword arguments
    set variables over them: ``results(EXECO_PERSISTENCE_DIR="runs/q1")``. Raises
    :class:`~minionize.errors.UnsupportedOperation` for an engine that keeps no results.
    """
    from .config import Settings, load_dotenv_file
    from .engines import load_engine

    load_dotenv_file()
    engine = load_engine(Settings.from_env({**os.environ, **variables}))
    engine.open()
    try:
        yield from engine.results()
    finally:
        engine.close()
