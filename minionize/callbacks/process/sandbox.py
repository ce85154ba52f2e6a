"""Tasks with files: a sandbox per attempt, staged inputs, required outputs, collection.

With ``--sandbox DIR`` each attempt of a process task runs in a fresh, empty directory
``DIR/<param id>.<attempt>.<random>`` (named like its logs, and unique to the attempt:
runs of several queues can share ``DIR``), its working directory and
``$MINION_SANDBOX``. It holds exactly the staged files, by their base names:

* ``--input PATTERN`` (per param; placeholders as in the command): a missing input
  rejects the param (dead-lettered at once, not run), the reason naming the file;
* ``--shared PATH``: in every sandbox; a missing one is a :class:`ConfigError` at start.

Files are staged by symlink (absolute), copy, or hard link (``--stage``).

**Success** is exit code 0 *and* every ``--output PATTERN`` (relative to the sandbox)
a regular file the task made: reached through directories of the sandbox (no symbolic
link on its way), neither a staged input nor inside one. Then, before the param is
acked, exactly the outputs are moved into ``--collect DIR`` (flat by base name, or
``DIR/<param id>/``), all or nothing, never over a file another param collected (that
param's attempt is rejected, naming both): see :mod:`._sandbox_collect`.

A problem of one param (a missing input, two of its files with one base name, a
directory input with ``--stage hardlink``, a collected name another param owns) is
that param's dead letter, at once; what no param can fix (patterns that always clash,
an output name no param fills) is a ConfigError at start.

**Cleanup** (``--keep-sandbox``): ``failed`` (default) removes a successful attempt's
sandbox; the sandbox of a failed attempt stays until the minion starts the param's next
attempt, so a dead-lettered param keeps its last one; a success removes every sandbox
the minion made for its param. ``never`` removes every sandbox when its attempt ends,
``always`` none. A task minionize stopped (graceful stop) leaves nothing unless
``always``. A minion removes only sandboxes it made.

:class:`Sandboxes` is what the process callback calls (``prepare`` before the spawn,
``finish`` after); the file operations (naming, staging, checking, collecting) are
functions of :mod:`._sandbox_files`, one thing each, importable from here too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from ...errors import CommandLineError, ConfigError
from ..base import Outcome, Result, StopReason
from ..command.builder import ParamError, Pattern, param_text, short
from ..task_io import read_tail, safe_name
from .collect import CollectClash, claim, collect, recover
from .sandbox_files import check_outputs as check_outputs
from .sandbox_files import check_relative, duplicate_names, last_component, make_sandbox, stage

if TYPE_CHECKING:
    from ...config import Env
    from ...engines.base import Delivery
    from ..command.builder import CommandBuilder

STAGES = ("symlink", "copy", "hardlink")
KEEPS = ("failed", "always", "never")
LAYOUTS = ("flat", "per-param")
#: Placeholders that are not the param: the same for different params.
COUNTERS = ("{#}", "{%}")
#: How a sandbox wrapper enters its directory: ``sh -c SCRIPT sh DIR PROGRAM ARGS...``
#: (posix_spawn has no working directory; ``cd`` then ``exec`` keeps the process id).
CD_SCRIPT = 'cd -- "$1" && shift && exec "$@"'


class MissingInput(ParamError):
    """An input of this param does not exist: it is dead-lettered without running."""


@dataclass(frozen=True)
class SandboxSpec:
    """What the sandbox flags say (``MINION_SANDBOX``, ``MINION_INPUT``, ...)."""

    root: str
    inputs: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    stage: str = "symlink"
    collect: Optional[str] = None
    layout: str = "flat"
    keep: str = "failed"

    @classmethod
    def from_env(cls, env: Env) -> Optional[SandboxSpec]:
        """The spec of the run, or None without ``MINION_SANDBOX``; ConfigError when a
        file flag is given without it or a value is not one of its choices."""
        root = env.str("MINION_SANDBOX")
        lists = {name: split_list(env.str(name)) for name in LIST_VARIABLES}
        choices = {
            name: _choice(env.str(name), name, allowed)
            for name, allowed in (("MINION_STAGE", STAGES), ("MINION_KEEP_SANDBOX", KEEPS),
                                  ("MINION_COLLECT_LAYOUT", LAYOUTS))
        }
        collect = env.str("MINION_COLLECT")
        if root is None:
            given = [name for name, value in lists.items() if value]
            given += [name for name in ("MINION_COLLECT", *choices) if env.str(name)]
            if given:
                raise ConfigError(
                    f"{given[0]} works in a sandbox: give --sandbox DIR (MINION_SANDBOX) too"
                )
            return None
        return cls(
            root=root,
            inputs=lists["MINION_INPUT"],
            shared=lists["MINION_SHARED"],
            outputs=lists["MINION_OUTPUT"],
            stage=choices["MINION_STAGE"] or "symlink",
            collect=collect,
            layout=choices["MINION_COLLECT_LAYOUT"] or "flat",
            keep=choices["MINION_KEEP_SANDBOX"] or "failed",
        )


#: The variables that hold several values, one per line (each repeated flag adds one).
LIST_VARIABLES = ("MINION_INPUT", "MINION_SHARED", "MINION_OUTPUT")


def split_list(value: Optional[str]) -> tuple[str, ...]:
    """A list variable's values: one per line (blank lines skipped)."""
    if not value:
        return ()
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def _choice(value: Optional[str], name: str, allowed: Sequence[str]) -> Optional[str]:
    if value is None or value in allowed:
        return value
    raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}: set it to one of them")


@dataclass
class Attempt:
    """One attempt's sandbox: its directory and the outputs it must leave."""

    path: str
    param_id: str
    attempt: int
    #: Each output as (path relative to the sandbox, name it is collected under).
    outputs: list[tuple[str, str]] = field(default_factory=list)
    #: The names of the staged files (an output is none of them, nor inside one).
    staged: list[str] = field(default_factory=list)
    #: The param, short, for messages.
    param: str = ""


class Sandboxes:
    """The sandboxes of one minion (see the module). Built at start: a malformed pattern,
    patterns whose files always share a base name, or a flat collection of an output
    whose name no param fills, is a ConfigError."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.root = os.path.abspath(spec.root)
        self.inputs = [Pattern(text, "--input/MINION_INPUT") for text in spec.inputs]
        self.outputs = [Pattern(text, "--output/MINION_OUTPUT") for text in spec.outputs]
        for pattern in self.outputs:
            check_relative(pattern.text, pattern.source)
        self.shared = [os.path.abspath(path) for path in spec.shared]
        self.collect = os.path.abspath(spec.collect) if spec.collect else None
        self._check_names()
        #: The sandboxes this minion made, by param id (a minion removes only those).
        self._made: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._linked_once = False

    def _check_names(self) -> None:
        """What no param can fix: two files every param names alike, an output name
        collected flat that no param fills."""
        if self.collect is not None and self.spec.layout == "flat":
            for pattern in self.outputs:
                last = last_component(pattern.text)
                if not [f for f in Pattern(last, pattern.source).fields() if f not in COUNTERS]:
                    where = f" {last!r}" if last != pattern.text else ""
                    raise ConfigError(
                        f"{pattern.source} names no placeholder of the param in its file "
                        f"name{where}: collected flat into {self.spec.collect}, every "
                        f"param's output would overwrite the last; put the param in its "
                        f"name (e.g. out_{{}}.txt), or use --collect-layout per-param"
                    )
        names = [os.path.basename(path) for path in self.shared]
        names += [last_component(pattern.text) for pattern in self.inputs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"--input/--shared: two files named {twice[0]!r} for every "
                              "param: a sandbox holds files by their base names")
        if self.collect is not None:
            names = [last_component(pattern.text) for pattern in self.outputs]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ConfigError(f"--output: two outputs named {twice[0]!r} for every "
                                  "param: they are collected by their base names")

    def setup(self) -> None:
        """At start, before anything is taken: the shared files exist, the directories
        can be made (ConfigError otherwise), a collection a killed minion left is
        finished."""
        for given, path in zip(self.spec.shared, self.shared):
            if not os.path.exists(path):
                raise ConfigError(f"--shared/MINION_SHARED {given!r}: no such file: nothing "
                                  "was consumed")
            if self.spec.stage == "hardlink" and os.path.isdir(path):
                raise ConfigError(f"--shared/MINION_SHARED {given!r} is a directory: "
                                  "--stage hardlink links files: use --stage copy or symlink")
        for what, directory in (("MINION_SANDBOX", self.root), ("MINION_COLLECT", self.collect)):
            if directory is None:
                continue
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{what}={directory!r} cannot be created: "
                                  f"{exc.strerror or exc}") from None
        if self.collect is not None:
            recover(self.collect)

    # -- before the spawn ----------------------------------------------------------------
    def prepare(self, delivery: Delivery, builder: CommandBuilder) -> Attempt:
        """Fill the patterns, check the inputs, make the attempt's fresh sandbox and stage
        its files. Raises :class:`ParamError` (:class:`MissingInput` among them) for a
        param that cannot run, :class:`CommandLineError` for a mistake of the flags."""
        param = delivery.param
        inputs = [builder.fill(pattern, param) for pattern in self.inputs]
        outputs = [builder.fill(pattern, param) for pattern in self.outputs]
        for path, pattern in zip(outputs, self.outputs):
            check_relative(path, f"{pattern.source} gives {path!r}", ParamError)
        for path in inputs:
            if not os.path.exists(path):
                raise MissingInput(f"input {path!r} does not exist: the param was not run")
            if self.spec.stage == "hardlink" and os.path.isdir(path):
                raise ParamError(f"input {path!r} is a directory: --stage hardlink links "
                                 "files: the param was not run (use --stage copy or symlink)")
        files = [*self.shared, *(os.path.abspath(path) for path in inputs)]
        twice = duplicate_names(files)
        if twice:
            raise ParamError(f"--input/--shared: two files named {twice!r} for this param: "
                             "a sandbox holds files by their base names")
        twice = duplicate_names(outputs) if self.collect else None
        if twice:
            raise ParamError(f"--output: two outputs named {twice!r} for this param: they "
                             "are collected by their base names")
        ident = str(delivery.id)
        with self._lock:  # the last attempt's sandbox is the one kept
            earlier = [] if self.spec.keep == "always" else self._made.pop(ident, [])
        for old in earlier:
            shutil.rmtree(old, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)
        path = make_sandbox(self.root, ident, delivery.attempt)
        with self._lock:
            self._made.setdefault(ident, []).append(path)
        text = json.dumps(param) if isinstance(param, str) else param_text(param)
        attempt = Attempt(path, ident, delivery.attempt,
                          [(out, os.path.basename(out)) for out in outputs],
                          [os.path.basename(source) for source in files], short(text))
        try:
            for source in files:
                stage(source, os.path.join(path, os.path.basename(source)), self.spec.stage)
        except OSError as exc:
            self._remove(attempt)
            if exc.errno == errno.EXDEV or self.spec.stage == "hardlink":
                message = (f"--stage hardlink: cannot link {exc.filename!r} into {self.root}: "
                           f"{exc.strerror or exc}: use --stage copy or symlink")
                if self._linked_once and exc.filename not in self.shared:
                    raise ParamError(message) from None  # this param's file is elsewhere
                raise CommandLineError(message) from None
            raise
        self._linked_once = True
        return attempt

    def _remove(self, attempt: Attempt) -> None:
        shutil.rmtree(attempt.path, ignore_errors=True)
        with self._lock:
            made = self._made.get(attempt.param_id, [])
            if attempt.path in made:
                made.remove(attempt.path)
            if not made:
                self._made.pop(attempt.param_id, None)

    @staticmethod
    def wrap(argv: Sequence[str], attempt: Attempt) -> list[str]:
        """``argv`` run in the attempt's sandbox (its program found from here first)."""
        return ["/bin/sh", "-c", CD_SCRIPT, "sh", attempt.path, *argv]

    # -- after the task ------------------------------------------------------------------
    def finish(self, attempt: Attempt, result: Result, stop_reason: Optional[StopReason]) -> Result:
        """The attempt's result once its outputs are judged and collected, its sandbox
        removed or kept (see the module)."""
        keep = self.spec.keep
        if stop_reason is not None:  # minionize stopped it: its exit code does not decide
            if stop_reason is StopReason.SHUTDOWN and keep != "always" or keep == "never":
                self._remove(attempt)
            return result
        if result.ok:
            result = self._judge(attempt, result)
        if result.ok:
            if keep != "always":
                with self._lock:
                    made = self._made.pop(attempt.param_id, [])
                for path in made:
                    shutil.rmtree(path, ignore_errors=True)
        elif keep == "never":
            self._remove(attempt)
        return result

    def _judge(self, attempt: Attempt, result: Result) -> Result:
        missing = check_outputs(attempt.path, [rel for rel, _ in attempt.outputs],
                                attempt.staged)
        if missing:
            return _failed(result, f"exit code 0 but {missing}")
        if self.collect is None:
            return result
        root, prefix = self.collect, ""
        if self.spec.layout == "per-param":
            prefix = safe_name(attempt.param_id) + "/"
        names = [(rel, prefix + name) for rel, name in attempt.outputs]
        try:
            for _, name in names:
                claim(root, name, attempt.param_id, attempt.param)
            collect(attempt.path, names, root)
        except CollectClash as exc:
            return _failed(result, f"exit code 0 but {exc}", Outcome.REJECTED)
        except OSError as exc:
            return _failed(result, f"exit code 0 but the outputs could not be collected into "
                                   f"{os.path.join(root, prefix)}: {exc.strerror or exc}")
        return result


def _failed(result: Result, reason: str, outcome: Outcome = Outcome.FAILED) -> Result:
    """A success of the program that is a failed attempt (or a rejected param), for
    ``reason``."""
    tail = read_tail(result.stderr_path) if result.stderr_path else ""
    return Result(outcome, reason=reason, exit_code=result.exit_code, stderr_tail=tail,
                  stdout_path=result.stdout_path, stderr_path=result.stderr_path)
