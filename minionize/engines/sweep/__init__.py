"""The sweep queue: a queue in a shared directory, the embedded default.

:mod:`.engine` is the engine; it holds a :mod:`.store` (the operations, each a journal
record), an :mod:`.outbox` (what this minion owes between two lock sessions, written
first by every session of :mod:`.access`), a :mod:`.taker` (claiming) and an
:mod:`.admin` (the queue's verbs). The store holds a :mod:`.replica` (this process's
copy of the queue: :mod:`.state` and its :mod:`.leases`, the files of :mod:`.files`,
:mod:`.params_file`, :mod:`.journal` and :mod:`.results`, :mod:`.compaction`) and a
:mod:`.session` (the :mod:`.lock` around each operation); :mod:`.repair` rebuilds a
damaged queue; :mod:`.execo_import` reads execo's files.
"""

from __future__ import annotations

from .engine import SweepEngine

__all__ = ["SweepEngine"]
