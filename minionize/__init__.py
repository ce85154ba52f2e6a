"""minionize: turn any program or Python function into a queue-driven worker.

>>> from minionize import minionizer, FuncCallback
>>> minionizer(FuncCallback(simulate)).run()          # doctest: +SKIP

Names are imported on first use so that ``minionize --version`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .callbacks.base import Callback, Outcome, Result, Task
    from .callbacks.docker.callback import DockerCallback
    from .callbacks.function.callback import FuncCallback
    from .callbacks.process.callback import ProcessCallback
    from .config import Settings
    from .engines import results
    from .engines.base import Delivery, Engine
    from .errors import (
        CallbackError,
        ConfigError,
        EngineError,
        MinionizeError,
        MissingExtraError,
        UnsupportedOperation,
    )
    from .minion.run import Minion, minionizer
    from .minion.task import task
    from .params import Param
    from .reporters.base import Reporter

_EXPORTS = {
    "minionizer": "minionize.minion.run",
    "Minion": "minionize.minion.run",
    "ProcessCallback": "minionize.callbacks.process.callback",
    "FuncCallback": "minionize.callbacks.function.callback",
    "task": "minionize.minion.task",
    "DockerCallback": "minionize.callbacks.docker.callback",
    "Callback": "minionize.callbacks.base",
    "Outcome": "minionize.callbacks.base",
    "Result": "minionize.callbacks.base",
    "Task": "minionize.callbacks.base",
    "Delivery": "minionize.engines.base",
    "Engine": "minionize.engines.base",
    "Param": "minionize.params",
    "Reporter": "minionize.reporters.base",
    "Settings": "minionize.config",
    "results": "minionize.engines",
    "MinionizeError": "minionize.errors",
    "ConfigError": "minionize.errors",
    "EngineError": "minionize.errors",
    "CallbackError": "minionize.errors",
    "MissingExtraError": "minionize.errors",
    "UnsupportedOperation": "minionize.errors",
}

__all__ = [  # noqa: RUF022 - grouped by kind, like _EXPORTS
    "__version__",
    "minionizer", "Minion", "ProcessCallback", "FuncCallback", "task", "DockerCallback",
    "Callback", "Outcome", "Result", "Task", "Delivery", "Engine", "Param", "Reporter",
    "Settings", "results", "MinionizeError", "ConfigError", "EngineError", "CallbackError",
    "MissingExtraError", "UnsupportedOperation",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'minionize' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
