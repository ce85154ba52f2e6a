"""The sweep queue: a queue in a shared directory, the embedded default.

:mod:`.engine` is the engine; :mod:`.store` its state on disk (a snapshot and a journal,
:mod:`.files`, :mod:`.journal`), changed under :mod:`.lock`; :mod:`.state` the pure state
machine and :mod:`.leases` its leases; :mod:`.admin` the queue's verbs.
"""

from .engine import SweepEngine

__all__ = ["SweepEngine"]
