"""Tasks as processes: the callback, how a process is spawned and reaped, and the
per-task sandbox with the outputs it collects."""

from .callback import ProcessCallback

__all__ = ["ProcessCallback"]
