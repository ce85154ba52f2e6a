"""Reporters by name (``MINION_REPORTER``): null (default), stdout, json."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import MinionInfo, NullReporter, Reporter, TaskReport

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["MinionInfo", "NullReporter", "Reporter", "TaskReport", "load_reporter"]

BUILTIN_REPORTERS = {
    "null": "minionize.reporters.base:NullReporter",
    "stdout": "minionize.reporters.stdout:StdoutReporter",
    "json": "minionize.reporters.json:JsonReporter",
}


def load_reporter(settings: Settings) -> Reporter:
    target = BUILTIN_REPORTERS.get(settings.reporter.strip().lower())
    if target is None:
        raise ConfigError(
            f"MINION_REPORTER={settings.reporter!r} is not a known reporter: "
            f"use one of {', '.join(BUILTIN_REPORTERS)}"
        )
    module_name, _, attribute = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attribute)
    reporter: Reporter = cls.from_settings(settings)
    return reporter
