"""How a sweep engine and its administration reach their queue: one lock session at a
time, what this process owes the queue written first.

:meth:`QueueAccess.locked` is every lock session this process's engine opens: it takes
the lock (:meth:`.store.SweepStore.locked`), writes the settles and starts the
:class:`~.outbox.Outbox` owes (:meth:`~.outbox.Outbox.write_pending`: an ack is recorded
here, in the session after it, usually the next take's claim), then hands the store
over. An I/O error becomes one line naming the queue (:func:`os_error`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import EngineError
from .lock import LockLost
from .outbox import NOTHING, Outbox
from .store import SweepStore

#: Errors that say the queue's filesystem takes no more writes.
_CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def os_error(directory: str, exc: OSError) -> EngineError:
    """The one-line error for an I/O error on the queue in ``directory``."""
    if exc.errno in _CANNOT_WRITE:
        return EngineError(
            f"sweep queue in {directory}: cannot write: {exc.strerror}; fix that and try "
            "again (what the queue holds is kept)"
        )
    return EngineError(f"sweep queue in {directory}: {exc}")


class QueueAccess:
    """This process's lock sessions on ``store``, each writing what ``outbox`` owes first."""

    def __init__(self, store: SweepStore, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    @contextmanager
    def locked(self) -> Iterator[SweepStore]:
        """The store, locked and up to date, what is owed written first. If the lock was
        broken while this process was stopped in the session, what it wrote may be lost:
        it is owed again (settling twice is harmless). I/O errors become EngineError."""
        outbox = self.outbox
        written = NOTHING
        try:
            with self.store.locked() as store:
                written = outbox.write_pending(store)
                yield store
        except LockLost:
            outbox.give_back(written)
            raise
        except OSError as exc:
            raise os_error(self.store.directory, exc) from exc
