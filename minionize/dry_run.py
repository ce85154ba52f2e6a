"""``DRY=1`` (``minionize -n``): show what would run for each param, consume nothing.

The lines are the run's output (one per param, on stdout, for a pipe), not messages:
they are written to a stream, not logged.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Optional, TextIO

if TYPE_CHECKING:
    from .callbacks.base import Callback
    from .engines.base import Engine

log = logging.getLogger("minionize.minion")


def show_dry_run(engine: Engine, callback: Callback, out: Optional[TextIO] = None) -> None:
    """Write ``callback.describe(param)`` for every param ``engine`` would hand out, one
    line each, to ``out`` (stdout). An engine that cannot show its params without taking
    them is told in a warning.

    A reader that goes away (``| head -1``) raises BrokenPipeError: the command line
    ends quietly, as ``seq`` does.
    """
    try:
        params = engine.peek(sys.maxsize)
    except Exception as exc:
        log.warning("DRY: %s", exc)
        return
    stream = out if out is not None else sys.stdout
    for param in params:
        stream.write(f"{callback.describe(param)}\n")
    stream.flush()
