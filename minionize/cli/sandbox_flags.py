"""The flags of tasks with files (``--sandbox``, ``--input``, ``--shared``, ``--output``,
``--collect``, ...; see :mod:`minionize.callbacks.process.sandbox` and docs/sandbox.md): each sets a
variable, as every flag does; a repeated flag gives one value per line."""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Optional

from ._options import add_group, table
from ._options import apply as apply_options

if TYPE_CHECKING:
    from ..callbacks.process.sandbox import Sandboxes

#: The flags, each with the variable it sets (a repeatable one: one value per line).
OPTIONS = table("""
--sandbox DIR -> MINION_SANDBOX
    run each attempt in a fresh directory DIR/<id>.<attempt>.<random> holding only its
    inputs and the shared files; it is the task's working directory and $MINION_SANDBOX
    (MINION_SANDBOX)
--input PATTERN list -> MINION_INPUT
    a file of each param, staged into its sandbox by base name; a missing one dead-letters
    the param without running it; repeatable (MINION_INPUT)
--shared PATH list -> MINION_SHARED
    a file staged into every sandbox; checked at start; repeatable (MINION_SHARED)
--output PATTERN list -> MINION_OUTPUT
    a file the task must leave in its sandbox: success is exit code 0 and every output a
    regular file; repeatable (MINION_OUTPUT)
--stage {symlink,copy,hardlink} -> MINION_STAGE
    how inputs and shared files are staged (MINION_STAGE, default symlink)
--collect DIR -> MINION_COLLECT
    on success, before the ack, move exactly the outputs into DIR, all or nothing, never
    over a file another param collected (MINION_COLLECT)
--collect-layout {flat,per-param} -> MINION_COLLECT_LAYOUT
    flat: DIR/<name> (an output's file name needs a placeholder of the param);
    per-param: DIR/<id>/<name>
    (MINION_COLLECT_LAYOUT, default flat)
--keep-sandbox {failed,always,never} -> MINION_KEEP_SANDBOX
    failed: keep the last sandbox of a failed param, remove it once the param succeeds
    (MINION_KEEP_SANDBOX, default failed)
""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The group of sandbox flags."""
    add_group(
        parser, "tasks with files (placeholders in patterns as in the command: {}, {name}, {.}, ...)",
        OPTIONS,
    )


def apply(args: argparse.Namespace, values: MutableMapping[str, str],
          processes: bool = True) -> Optional[Sandboxes]:
    """Set the variables of the flags given; the sandboxes of the run when
    ``MINION_SANDBOX`` is set (None otherwise). ``processes`` says whether the tasks are
    processes (not --docker); ConfigError on a mistake: nothing is consumed."""
    from ..callbacks.process.sandbox import Sandboxes, SandboxSpec
    from ..config import Env
    from ..errors import ConfigError

    apply_options(args, values, OPTIONS)
    spec = SandboxSpec.from_env(Env(values))
    if spec is None:
        return None
    if not processes:
        raise ConfigError(
            "--sandbox (MINION_SANDBOX) runs processes in a directory: it cannot be used with "
            "--docker; mount the files with MINION_DOCKER_VOLUMES instead"
        )
    return Sandboxes(spec)
