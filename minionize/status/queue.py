"""The queue's own counters for ``minion-status`` and ``mtop``, when the engine can tell."""

from __future__ import annotations

import os
import threading
from typing import Any, Optional


def query_queue(timeout: float = 3.0) -> tuple[Optional[dict[str, Any]], str]:
    """The configured engine's counters (``MINION_ENGINE`` ...), or None and why not.

    Runs in a thread so that an unreachable queue service cannot hang the status.
    The engine is not opened: ``status()`` is an administration call.
    """
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            from ..config import Settings
            from ..engines import load_engine

            settings = Settings.from_env()
            if settings.engine.strip().lower() in ("sweep", "execo"):
                # Asking must not create an empty queue in the working directory.
                where = settings.env.str("EXECO_PERSISTENCE_DIR", "sweeps") or "sweeps"
                if not os.path.isdir(where):
                    answer["note"] = f"queue size unknown: no sweep queue in {where}"
                    return
            engine = load_engine(settings)
            counters = engine.status()
            answer["queue"] = dict(counters)
            answer["note"] = engine.describe()
        except Exception as error:  # the queue is optional here: say why, go on
            answer["note"] = f"queue size unknown: {error}"

    thread = threading.Thread(target=ask, name="minion-status-queue", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return None, f"queue size unknown: the queue did not answer within {timeout:g} s"
    return answer.get("queue"), str(answer.get("note", ""))
