"""The Lua scripts of the redis engine, one file each, shipped as package data.

Each settle, claim, lease renewal and administration step is one script, so that it is
atomic on the server; the comment at the top of each file says its KEYS, ARGV and reply.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def lua(name: str) -> str:
    """The text of ``<name>.lua`` (``settle``, ``fill``, ``claim``, ...)."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
