"""Tasks as Python function calls in a process of their own: the callback
(:mod:`.callback`) and the wire between the minion and the function's process
(:mod:`.wire`). ``@task``, which makes a function a minion, is the loop's
(:mod:`minionize.minion.task`)."""

from .callback import FuncCallback

__all__ = ["FuncCallback"]
