"""Params typed by a user: ranges, literal values, lines of text, JSON lines, products.

Shared by ``minion-queue fill`` and anything else that reads params from a person.
Every reader is a generator, so a million params stream without being held in memory.

* ``0..9``: the integers 0 to 9, both included (``-5..5`` and ``10..0`` work too);
  only ``START..END`` with no space is a range: ``0 ..9`` is a value, as typed.
* a value (typed): exactly the text typed, as a string, except where JSON says the same
  thing exactly: a number, ``true``, ``false`` or ``null`` whose JSON is the text itself
  (``5``, ``-3``, ``0.5``), and a list or mapping (``[1, 2]``, ``{"x": 1}``), whose
  numbers follow the same rule. So ``3.10``, ``1e3``, ``1.50``, `` 5``, ``NaN`` and
  ``"a"`` stay the strings typed: the program receives them as typed, and two different
  texts are never one param.
* lines (stdin): one param per line, each read like a typed value (only the line end
  goes; spaces stay); blank lines are skipped.
* JSON lines (a file): one JSON value per line; a line that is not standard JSON
  (``NaN``, ``Infinity``), or that holds a number a JSON number cannot keep exactly
  (``1e400``, ``1e-400``, ``0.10000000000000000001``), is an error naming the line.
  Other numbers keep their value, as JSON says (``3.10`` is the number ``3.1``).
* file names (``--from-files``): the ``{}`` part of each, as a string, always.
* products: ``a=1,2,3 b=x,y`` gives every mapping ``{"a": 1, "b": "x"}``, ...,
  the first name varying slowest (as execo's ``sweep()``); values are read like a typed
  value, spaces included, and a range among them like a range item (``n=0..3``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Optional

from ..errors import ConfigError
from ..params import InexactJSON, canonical_json, strict_json

#: ``START..END`` exactly: with a space anywhere (``0 ..9``) it is a value, as typed.
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)\Z")


def parse_range(text: str) -> Optional[range]:
    """``"0..9"`` -> ``range(0, 10)`` (inclusive; descending when start > end); None
    when ``text`` is not a range."""
    match = _RANGE.match(text)
    if match is None:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    return range(start, end + 1) if start <= end else range(start, end - 1, -1)


def _typed_int(text: str) -> Any:
    value = int(text)
    return value if str(value) == text else text  # -0 stays "-0"


def _typed_float(text: str) -> Any:
    value = float(text)
    try:
        return value if canonical_json(value) == text else text
    except ValueError:  # 1e400 is inf: not JSON at all
        return text


def parse_value(text: str) -> Any:
    """A typed value: its JSON value where that is exactly the text (``5``, ``0.5``,
    ``true``, ``[1, 2]``, ``{"x": 1}``), else ``text`` itself, as a string. A number
    inside a list or mapping that JSON would change (``3.10``, ``1e3``, ``NaN``) stays
    its text too. See the module docstring."""
    try:
        value = json.loads(text, parse_int=_typed_int, parse_float=_typed_float,
                           parse_constant=str)
    except (ValueError, RecursionError):
        return text
    if isinstance(value, (list, dict)):
        return value  # spaces and key order of a structure are syntax, not content
    if isinstance(value, str) or canonical_json(value) != text:
        return text
    return value


def _line_text(line: str) -> str:
    """A line without its line end (``\\n`` or ``\\r\\n``), and nothing else removed."""
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def require_utf8(text: str, where: str, hint: str = "a queue holds UTF-8 text") -> str:
    """``text``, or ConfigError if it holds bytes that were not UTF-8 (read with
    ``errors="surrogateescape"``): ``<where> is not UTF-8 text (byte 0xff at column 3)``."""
    bad = _NOT_UTF8.search(text)
    if bad is not None:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{ord(bad.group()) - 0xDC00:02x} at column "
            f"{bad.start() + 1}): {hint}"
        )
    return text


def read_lines(stream: Iterable[str], name: str = "standard input") -> Iterator[Any]:
    """One param per line (see :func:`parse_value`); blank lines are skipped; a line
    that is not UTF-8 (read with ``surrogateescape``) is a ConfigError naming it."""
    for number, line in enumerate(stream, 1):
        line = _line_text(line)
        if line.strip():
            yield parse_value(require_utf8(line, f"{name} line {number}"))


def read_json_lines(stream: IO[str], name: str = "<input>") -> Iterator[Any]:
    """One JSON value per line; blank lines skipped; ConfigError names a bad line."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        require_utf8(line, f"{name} line {number}", "JSON lines are UTF-8")
        try:
            yield strict_json(line)
        except InexactJSON as exc:
            raise ConfigError(f"{name} line {number}: {exc}") from None
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
        require_utf8(spec, f"--product {name}")
        factors.append((name, [*_product_values(values)]))
    return factors


def _product_values(values: str) -> Iterator[Any]:
    """The values of ``V1,V2,...``: a range (``0..3``) as its integers, as a positional
    item, the others as typed values."""
    for value in values.split(","):
        numbers = parse_range(value)
        if numbers is not None:
            yield from numbers
        else:
            yield parse_value(value)


def product(specs: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The cartesian product of ``NAME=V1,V2,...`` specs, as mappings."""
    factors = parse_product(specs)
    names = [name for name, _ in factors]
    for combination in itertools.product(*(values for _, values in factors)):
        yield dict(zip(names, combination))


def params_from_items(items: Sequence[str], stdin: Optional[Iterable[str]] = None) -> Iterator[Any]:
    """Params from command-line items: a range (``0..9``), ``-`` (lines of ``stdin``),
    or a literal value."""
    for index, item in enumerate(items, 1):
        require_utf8(item, f"argument {index} ({item.encode('utf-8', 'replace').decode()!r})")
        numbers = parse_range(item)
        if numbers is not None:
            yield from numbers
        elif item == "-":
            if stdin is None:
                raise ConfigError("- reads params from standard input, which is not available")
            yield from read_lines(stdin)
        else:
            yield parse_value(item)


def params_from_files(pattern: str) -> list[str]:
    """The ``{}`` part of every file matching ``pattern`` (``in/inputfile_{}.txt``), as
    a string, always: ``{}`` replaced by it gives the file name back (``f_[1, 2].txt``
    gives ``"[1, 2]"``, never the list that would fill ``{}`` as ``[1,2]``). Names that
    are numbers as JSON writes them (``7``, ``-3``, ``0.5``) come first in their numeric
    order, then the rest by name. ConfigError when ``{}`` is not there exactly once or
    nothing matches."""
    import glob
    import os

    before, found, after = pattern.partition("{}")
    if not found or "{}" in after:
        raise ConfigError(
            f"--from-files {pattern!r}: write {{}} once where the param is in the file name, "
            "e.g. --from-files 'in/inputfile_{}.txt'"
        )
    matching = re.compile(re.escape(before) + r"(.+?)" + re.escape(after) + r"\Z", re.DOTALL)
    parts = []
    for path in glob.glob(glob.escape(before) + "*" + glob.escape(after)):
        match = matching.match(path)
        if match and os.sep not in match.group(1):
            parts.append(require_utf8(match.group(1), f"the {{}} part of {path!r}"))
    if not parts:
        raise ConfigError(f"--from-files {pattern!r}: no file matches it")
    numbers: list[tuple[Any, str]] = []
    others: list[str] = []
    for part in parts:
        value = parse_value(part)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.append((value, part))  # parse_value: a number only when exactly its text
        else:
            others.append(part)
    return [*(part for _, part in sorted(numbers)), *sorted(others)]
