"""Durations as GNU parallel writes them: a number of seconds (``30``, ``0.5``), or
numbers each followed by a unit ``s``, ``m``, ``h`` or ``d`` (``1m``, ``2h30m``, ``1.5s``,
``1d3.5h``)."""

from __future__ import annotations

import re

#: Seconds in each unit of a duration.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}[smhd])+")
_PART = re.compile(rf"({_NUMBER})([smhd])")
DURATION_HINT = "set it to seconds (30, 0.5) or with units s m h d (1.5s, 2m, 2h30m)"


def parse_duration(text: str) -> float:
    """The seconds of ``text``: a number, or numbers with units (``2h30m`` is 9000.0).
    Raises ValueError for anything else; a plain number is taken as ``float`` takes it
    (the caller checks its sign and that it is finite)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(number) * UNITS[unit] for number, unit in _PART.findall(text))
