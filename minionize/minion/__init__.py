"""The loop of one minion: take, run, settle, and stop gracefully.

:mod:`.run` is the minion itself (:class:`Minion`, :func:`minionizer`); :mod:`.slots`
runs tasks side by side, :mod:`.monitor` renews leases and enforces timeouts,
:mod:`.settle` decides how a finished task is settled, :mod:`.stopping` and :mod:`.halt`
say when to stop, :mod:`.dry_run` prints instead of running.
"""

from .run import Minion, minionizer

__all__ = ["Minion", "minionizer"]
