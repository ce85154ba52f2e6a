"""Library warnings on the command line: the library logs (logger ``minionize``), the
commands show each record as one ``PROG: warning: ...`` line on stderr; the minion
loop's own lines (logger ``minionize.minion``: dead letters, a stop, ``--halt``) as
``PROG: ...``."""

from __future__ import annotations

import logging
import sys


class _LevelFormatter(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "minionize.minion":  # the loop's own lines read as they always did
            return f"{self.prog}: {record.getMessage()}"
        return f"{self.prog}: {record.levelname.lower()}: {record.getMessage()}"


def show_library_warnings(prog: str) -> None:
    """Show the library's warnings as ``PROG: warning: ...`` lines (once per process)."""
    logger = logging.getLogger("minionize")
    if any(getattr(handler, "minionize_cli", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter(prog))
    handler.minionize_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
