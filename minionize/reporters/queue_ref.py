"""Which queue a minion serves, as its report records it (the ``queue`` of its identity).

``{"engine": "sweep", "location": "/abs/sweeps", "variables": {...}}``: the engine's
name, where its queue is (an absolute path for the sweep and file engines, the settings
that name it for the others) and the variables that locate it, so that ``minion-status``
finds the queue from any directory (:func:`queue_variables`). A value holding a
credential (a password in a URL) is recorded redacted, and its name listed in
``redacted``: the reader takes it from its own environment when that one matches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

#: The variables that say which queue an engine serves (not how it behaves).
LOCATING = {
    "sweep": ("EXECO_PERSISTENCE_DIR",),
    "file": ("FILE_PATH", "FILE_DECODER", "FILE_SEPARATOR"),
    "redis": ("MINION_REDIS_URL", "MINION_REDIS_STREAM", "MINION_REDIS_GROUP",
              "MINION_REDIS_DECODER"),
    "pulsar": ("PULSAR_CONNECTION", "PULSAR_TOPIC", "PULSAR_SUBSCRIPTION", "PULSAR_ADMIN_URL",
               "PULSAR_DEAD_LETTER_TOPIC", "PULSAR_DECODER"),
    "pubsub": ("GOOGLE_PROJECT_ID", "GOOGLE_TOPIC_ID", "GOOGLE_SUBSCRIPTION",
               "MINION_DEAD_LETTER_TOPIC", "GOOGLE_DECODER", "PUBSUB_EMULATOR_HOST"),
}
#: Other names of an engine (``MINION_ENGINE=execo`` is the sweep engine).
ALIASES = {"execo": "sweep", "google": "pubsub"}
#: Where a path variable points when it is not set.
_DEFAULT_PATHS = {"EXECO_PERSISTENCE_DIR": "sweeps"}
#: The location of a file engine reading standard input.
STDIN = "-"


def engine_kind(name: str) -> str:
    """An engine's name as the queue reference records it (aliases resolved)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def queue_ref(engine: str, values: Mapping[str, str]) -> dict[str, Any]:
    """The queue reference of a minion using ``engine`` with settings ``values`` (its
    environment and flags), relative paths made absolute against this directory."""
    from ..engines.kit import redact

    kind = engine_kind(engine)
    variables: dict[str, str] = {"MINION_ENGINE": engine.strip() or kind}
    redacted: list[str] = []
    for name in LOCATING.get(kind, ()):
        value = values.get(name, "")
        if name in _DEFAULT_PATHS or (name == "FILE_PATH" and value not in ("", STDIN)):
            value = os.path.abspath(value or _DEFAULT_PATHS[name])
        hidden = redact(value)
        if hidden != value:
            redacted.append(name)
        # Recorded even when empty: the reader's own setting must not replace a default.
        variables[name] = hidden
    if kind == "sweep":
        location = variables["EXECO_PERSISTENCE_DIR"]
    elif kind == "file":
        location = variables["FILE_PATH"] or STDIN
    else:
        location = " ".join(f"{k}={v}" for k, v in variables.items()
                            if v and k != "MINION_ENGINE") or "default settings"
    ref: dict[str, Any] = {"engine": kind, "location": location, "variables": variables}
    if redacted:
        ref["redacted"] = redacted
    return ref


def ref_key(ref: Any) -> Optional[tuple[str, str]]:
    """What tells two queues apart (engine, location); None for a report without a
    reference (written before reports recorded it) or with a damaged one."""
    if not isinstance(ref, dict):
        return None
    engine, location = ref.get("engine"), ref.get("location")
    if not isinstance(engine, str) or not isinstance(location, str):
        return None
    return engine, location


def ref_label(ref: Any) -> str:
    """``sweep queue /abs/sweeps``: a queue reference in a few words."""
    key = ref_key(ref)
    if key is None:
        return "queue not recorded (reports from an older minionize)"
    engine, location = key
    if engine == "file" and location == STDIN:
        return "file engine on standard input"
    return f"{engine} queue {location}"


def queue_variables(ref: Any, environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with the variables of ``ref`` that locate its queue: what to build
    that queue's engine from. Raises ValueError when it cannot be done: the reference is
    damaged, the minions read standard input, or a credential the report does not keep
    is missing from ``environment``."""
    key = ref_key(ref)
    variables = ref.get("variables") if isinstance(ref, dict) else None
    if key is None or not isinstance(variables, dict):
        raise ValueError("the report's queue reference is damaged")
    if key == ("file", STDIN):
        raise ValueError("the minions read standard input")
    from ..engines.kit import redact

    values = dict(environment)
    redacted = ref.get("redacted") if isinstance(ref.get("redacted"), list) else []
    for name, value in variables.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("the report's queue reference is damaged")
        if name in redacted:
            mine = environment.get(name, "")
            if redact(mine) != value:
                raise ValueError(f"{name} holds a credential the report does not keep: set "
                                 f"{name} to {value}, with its credential")
            value = mine
        values[name] = value
    return values
