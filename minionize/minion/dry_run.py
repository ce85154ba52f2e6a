"""``DRY=1`` (``minionize -n``): show what would run for each param, consume nothing.

The lines are the run's output (one per param, on stdout, for a pipe), not messages:
they are written to a stream, not logged. They are written as the engine hands the
params out (:meth:`Engine.peek` may be a list or an iterator that reads them as they
are asked for): the first line of a million-param queue comes at once, and a reader
that goes away (``| head -1``) stops the reading.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Optional, TextIO

if TYPE_CHECKING:
    from ..callbacks.base import Callback
    from ..engines.base import Engine

log = logging.getLogger("minionize.minion")

#: Lines written between two flushes (every line on a terminal).
FLUSH_EVERY = 1000


def show_dry_run(engine: Engine, callback: Callback, out: Optional[TextIO] = None) -> None:
    """Write ``callback.describe(param)`` for every param ``engine`` would hand out, one
    line each, to ``out`` (stdout), flushed every :data:`FLUSH_EVERY` lines (every line
    on a terminal). An engine that cannot show its params without taking them, or that
    fails while reading them, is told in a warning after the lines it could show.

    A reader that goes away (``| head -1``) raises BrokenPipeError: the command line
    ends quietly, as ``seq`` does.
    """
    stream = out if out is not None else sys.stdout
    every = 1 if _is_terminal(stream) else FLUSH_EVERY
    try:
        params = iter(engine.peek(sys.maxsize))
    except Exception as exc:
        log.warning("DRY: %s", exc)
        return
    written = 0
    while True:
        try:
            param = next(params)
        except StopIteration:
            break
        except Exception as exc:
            stream.flush()
            log.warning("DRY: %s", exc)
            return
        stream.write(f"{callback.describe(param)}\n")
        written += 1
        if written % every == 0:
            stream.flush()
    stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
