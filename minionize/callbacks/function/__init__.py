"""Tasks as Python function calls in a worker process: the callback and ``@task``
(:mod:`.callback`) and the wire between the minion and its worker (:mod:`.wire`)."""

from .callback import FuncCallback, task

__all__ = ["FuncCallback", "task"]
