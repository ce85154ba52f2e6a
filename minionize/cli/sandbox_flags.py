"""The flags of tasks with files (``--sandbox``, ``--input``, ``--shared``, ``--output``,
``--collect``, ...; see :mod:`minionize.sandbox` and docs/sandbox.md): each sets a
variable, as every flag does; a repeated flag gives one value per line."""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping

from ..callbacks.base import Callback

#: option dest -> the variable it overrides
FLAG_VARIABLES = {
    "sandbox": "MINION_SANDBOX",
    "stage": "MINION_STAGE",
    "collect": "MINION_COLLECT",
    "collect_layout": "MINION_COLLECT_LAYOUT",
    "keep_sandbox": "MINION_KEEP_SANDBOX",
}
#: repeatable option dest -> the variable that holds its values, one per line
LIST_VARIABLES = {"input": "MINION_INPUT", "shared": "MINION_SHARED", "output": "MINION_OUTPUT"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The group of sandbox flags."""
    group = parser.add_argument_group(
        "tasks with files (placeholders in patterns as in the command: {}, {name}, {.}, ...)"
    )
    group.add_argument(
        "--sandbox", metavar="DIR",
        help="run each attempt in a fresh directory DIR/<id>.<attempt> holding only its "
        "inputs and the shared files; it is the task's working directory and "
        "$MINION_SANDBOX (MINION_SANDBOX)",
    )
    group.add_argument(
        "--input", action="append", metavar="PATTERN",
        help="a file of each param, staged into its sandbox by base name; a missing one "
        "dead-letters the param without running it; repeatable (MINION_INPUT)",
    )
    group.add_argument(
        "--shared", action="append", metavar="PATH",
        help="a file staged into every sandbox; checked at start; repeatable (MINION_SHARED)",
    )
    group.add_argument(
        "--output", action="append", metavar="PATTERN",
        help="a file the task must leave in its sandbox: success is exit code 0 and every "
        "output a regular file; repeatable (MINION_OUTPUT)",
    )
    group.add_argument(
        "--stage", choices=("symlink", "copy", "hardlink"),
        help="how inputs and shared files are staged (MINION_STAGE, default symlink)",
    )
    group.add_argument(
        "--collect", metavar="DIR",
        help="on success, before the ack, move exactly the outputs into DIR, all or "
        "nothing (MINION_COLLECT)",
    )
    group.add_argument(
        "--collect-layout", choices=("flat", "per-param"),
        help="flat: DIR/<name> (an output pattern needs a placeholder); per-param: "
        "DIR/<id>/<name> (MINION_COLLECT_LAYOUT, default flat)",
    )
    group.add_argument(
        "--keep-sandbox", choices=("failed", "always", "never"),
        help="failed: keep the last sandbox of a failed param, remove it once the param "
        "succeeds (MINION_KEEP_SANDBOX, default failed)",
    )


def apply(args: argparse.Namespace, values: MutableMapping[str, str], callback: Callback) -> None:
    """Set the variables of the flags given, and give ``callback`` its sandboxes when
    ``MINION_SANDBOX`` is set (ConfigError on a mistake: nothing is consumed)."""
    from ..config import Env
    from ..errors import ConfigError
    from ..sandbox import Sandboxes, SandboxSpec

    for dest, variable in FLAG_VARIABLES.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[variable] = str(value)
    for dest, variable in LIST_VARIABLES.items():
        items = getattr(args, dest, None)
        if items:
            values[variable] = "\n".join(items)
    spec = SandboxSpec.from_env(Env(values))
    if spec is None:
        return
    from ..callbacks.process import ProcessCallback

    if not isinstance(callback, ProcessCallback):
        raise ConfigError(
            "--sandbox (MINION_SANDBOX) runs processes in a directory: it cannot be used with "
            "--docker; mount the files with MINION_DOCKER_VOLUMES instead"
        )
    callback.sandboxes = Sandboxes(spec)
