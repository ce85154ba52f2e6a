"""Params typed by a user: ranges, literal values, lines of text, JSON lines, products.

Shared by ``minion-queue fill`` and anything else that reads params from a person.
Every reader is a generator, so a million params stream without being held in memory.

* ``0..9``: the integers 0 to 9, both included (``-5..5`` and ``10..0`` work too).
* a value: JSON if it parses (``3``, ``"a b"``, ``{"x": 1}``), else the text itself.
* lines (stdin): one param per line, each decoded as a value; blank lines are skipped.
* JSON lines (a file): one JSON value per line; a line that is not JSON is an error.
* products: ``a=1,2,3 b=x,y`` gives every mapping ``{"a": 1, "b": "x"}``, ...,
  the first name varying slowest (as execo's ``sweep()``); values decode like a value.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Optional

from .errors import ConfigError

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


def parse_range(text: str) -> Optional[range]:
    """``"0..9"`` -> ``range(0, 10)`` (inclusive; descending when start > end); None
    when ``text`` is not a range."""
    match = _RANGE.match(text)
    if match is None:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    return range(start, end + 1) if start <= end else range(start, end - 1, -1)


def parse_value(text: str) -> Any:
    """JSON if ``text`` parses as JSON, else ``text`` itself (a string)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_lines(stream: Iterable[str]) -> Iterator[Any]:
    """One param per line (see :func:`parse_value`); blank lines are skipped."""
    for line in stream:
        line = line.rstrip("\r\n")
        if line.strip():
            yield parse_value(line)


def read_json_lines(stream: IO[str], name: str = "<input>") -> Iterator[Any]:
    """One JSON value per line; blank lines skipped; ConfigError names a bad line."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise ConfigError(
                f"{name} line {number} is not JSON ({exc}): write one JSON value per line "
                '(strings in double quotes: "abc")'
            ) from None


def parse_product(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``["a=1,2", "b=x"]`` -> ``[("a", [1, 2]), ("b", ["x"])]``."""
    factors: list[tuple[str, list[Any]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"--product {spec!r} is not NAME=V1,V2,...: write e.g. --product a=1,2,3 b=x,y"
            )
        if any(name == other for other, _ in factors):
            raise ConfigError(f"--product names {name!r} twice: give each name once")
        factors.append((name, [parse_value(value.strip()) for value in values.split(",")]))
    return factors


def product(specs: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The cartesian product of ``NAME=V1,V2,...`` specs, as mappings."""
    factors = parse_product(specs)
    names = [name for name, _ in factors]
    for combination in itertools.product(*(values for _, values in factors)):
        yield dict(zip(names, combination))


def params_from_items(items: Sequence[str], stdin: Optional[Iterable[str]] = None) -> Iterator[Any]:
    """Params from command-line items: a range (``0..9``), ``-`` (lines of ``stdin``),
    or a literal value."""
    for item in items:
        numbers = parse_range(item)
        if numbers is not None:
            yield from numbers
        elif item == "-":
            if stdin is None:
                raise ConfigError("- reads params from standard input, which is not available")
            yield from read_lines(stdin)
        else:
            yield parse_value(item)
