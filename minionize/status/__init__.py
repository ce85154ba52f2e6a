"""``minion-status`` and ``mtop`` without their command line: the minions' reports, read.

:mod:`.model` is what is shown (:class:`Status`, :class:`MinionStatus`), :mod:`.read`
builds it from a report directory, :mod:`.queue` asks the configured engine for its
counters, :mod:`.text` prints it, and :mod:`.tui` draws ``mtop`` (with ``rich``,
imported there only). The command line, :mod:`minionize.cli.status`, uses them; nothing
here imports the command line.
"""

from __future__ import annotations

from .model import MinionStatus, Status
from .queue import query_queue
from .read import load_minion, read_status

__all__ = ["MinionStatus", "Status", "load_minion", "query_queue", "read_status"]
