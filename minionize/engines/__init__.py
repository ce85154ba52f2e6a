"""Engines, found by name through the entry-point group ``minionize.engines``, and
loaded from settings: :func:`load_engine` for a minion, :func:`results` for a program
that reads a queue's results.

The built-in engines are registered in that group too (see pyproject.toml); they are
also listed here so that starting a minion does not scan every installed distribution.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..params import Param
from .base import Delivery, Engine

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Delivery", "Engine", "Param", "BUILTIN_ENGINES", "engine_class", "load_engine",
           "results"]

BUILTIN_ENGINES = {
    "sweep": "minionize.engines.sweep:SweepEngine",
    "execo": "minionize.engines.sweep:SweepEngine",
    "file": "minionize.engines.file:FileEngine",
    "pubsub": "minionize.engines.pubsub:PubSubEngine",
    "google": "minionize.engines.pubsub:PubSubEngine",
    "pulsar": "minionize.engines.pulsar:PulsarEngine",
    "redis": "minionize.engines.redis:RedisEngine",
}

ENTRY_POINT_GROUP = "minionize.engines"


def _load(target: str) -> type[Engine]:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"the engine {target} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ConfigError(f"{target} is not a minionize Engine subclass")
    return cls


def _plugin_targets() -> dict[str, str]:
    from importlib.metadata import entry_points

    eps: Any = entry_points()
    # Python 3.10+ has select(); 3.9 returns a dict of lists.
    group = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep.value for ep in group}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered as ``name``; ConfigError when none is."""
    key = name.strip().lower()
    target = BUILTIN_ENGINES.get(key)
    if target is None:
        plugins = _plugin_targets()
        target = plugins.get(key) or plugins.get(name)
        if target is None:
            known = sorted(set(BUILTIN_ENGINES) | set(plugins))
            raise ConfigError(
                f"MINION_ENGINE={name!r} is not a known engine: use one of {', '.join(known)}"
            )
    return _load(target)


def load_engine(settings: Settings) -> Engine:
    """Build the engine that ``settings.engine`` names."""
    return engine_class(settings.engine).from_settings(settings)


def results(**variables: str) -> Iterator[dict[str, Any]]:
    """The results of the queue the settings name, in queue order: what
    ``minion-queue results --json`` prints, as dicts with ``id``, ``param`` and
    ``result`` (the value the task returned; None when it returned nothing).

    Settings come from the environment and ``.env``, as for a minion; keyword arguments
    set variables over them: ``results(EXECO_PERSISTENCE_DIR="runs/q1")``. Raises
    :class:`~minionize.errors.UnsupportedOperation` for an engine that keeps no results.
    """
    from ..config import Settings, load_dotenv_file

    load_dotenv_file()
    engine = load_engine(Settings.from_env({**os.environ, **variables}))
    engine.open()
    try:
        yield from engine.results()
    finally:
        engine.close()
