"""A param: any JSON value, its one canonical text, and how a message becomes one.

The bottom of the package with :mod:`.errors`: engines, the command line and the tests
all read and write params through these few functions.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Optional

Param = Any
"""A param: any JSON value (string, number, list, mapping, ...)."""


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(param: Any) -> str:
    """The canonical JSON text of ``param``. Raises ValueError for what standard JSON
    cannot hold (NaN, infinities) and TypeError for what JSON cannot encode at all."""
    return _CANONICAL(param)


class InexactJSON(ValueError):
    """A JSON text that standard JSON, or a JSON number, cannot hold exactly."""


def _strict_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or Decimal(repr(value)) != Decimal(text):
        raise InexactJSON(
            f"a JSON number cannot hold {text} exactly (it would become {value!r}); "
            f'write it as a string: "{text}"'
        )
    return value


def _no_constant(name: str) -> Any:
    raise InexactJSON(f'{name} is not standard JSON; write it as a string: "{name}"')


def strict_json(text: str) -> Any:
    """``json.loads(text)``, refusing with :class:`InexactJSON` what standard JSON cannot
    hold (``NaN``, ``Infinity``) and numbers whose value would change (``1e400``);
    :class:`ValueError` when ``text`` is not JSON."""
    try:
        return json.loads(text, parse_float=_strict_float, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deep") from None


def decode_param(data: bytes | str, decoder: str, variable: str) -> tuple[Param, Optional[str]]:
    """A message as a param: ``(param, None)``, or ``(its text, reason)`` when it cannot
    be decoded, for :attr:`Delivery.error` (the loop then dead-letters it).

    ``decoder`` is ``identity`` (the text is the param) or ``json``; ``variable`` names
    the setting that chose it, for the reason.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return repr(data[:200]), f"the message is not UTF-8 text: {exc}"
    else:
        text = data
    if decoder != "json":
        return text, None
    try:
        return strict_json(text), None
    except InexactJSON as exc:  # NaN, 1e400: what a queue must never hold or pass on
        return text, str(exc)
    except ValueError as exc:
        return text, f"the message is not JSON ({variable}=json): {exc}"
