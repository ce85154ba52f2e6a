"""The process callback (the default): run a program once per param.

The child runs in its own process group (so a timeout or a shutdown stops the whole
tree), with standard input from /dev/null (it must not eat the minion's params), or the
param's text with ``param_stdin``, and ``MINION_PARAM`` (JSON; above
:data:`PARAM_ENV_BYTES`, the file ``MINION_PARAM_FILE`` holds it instead),
``MINION_PARAM_ID`` and ``MINION_ATTEMPT`` in its environment. No shell is involved
unless one is asked for (``--shell``, or a ``to_cmd`` that returns a string), so a param
is never interpreted as a command. A reaper (:mod:`.reaper`) kills the tasks of a minion
that dies.

Processes are started with ``os.posix_spawnp`` (vfork + exec): the per-task cost of the
minion must stay a small fraction of the cost of a process. The task's log files are
opened in the minion, not in the child, so that an error names them rather than the
program. A program every param runs that cannot be executed raises
:class:`~minionize.errors.CommandLineError`: the minion stops, the param is given back.
Starting, waiting, signalling, handing the param over (its file, its standard input) and
the words for a failed start are :mod:`._spawn`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import signal
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from ...errors import ConfigError
from ..base import Callback, Outcome, Result, Task
from ..command.builder import DECODER_HINT, CommandBuilder, ParamError, shell_line
from ..task_io import UnsafeFile, make_log_dir
from .reaper import TOKEN_VARIABLE, Reaper
from .spawn import MAX_ARG_STRLEN as MAX_ARG_STRLEN
from .spawn import PARAM_ENV_BYTES as PARAM_ENV_BYTES
from .spawn import (
    Command,
    OutputPaths,
    ParamFiles,
    cannot_start,
    ended,
    not_found,
    nul_in_command,
    open_outputs,
    signal_group,
    start,
    wait,
)

if TYPE_CHECKING:
    from .sandbox import Sandboxes

log = logging.getLogger("minionize")


class ProcessCallback(Callback):
    """Run a program per param.

    ``command`` is the program and its arguments (a list), a template is the other way
    to say where the param goes. Subclass and override :meth:`to_cmd` to build the command
    yourself: return a list to run it as argv, a string to run it with ``/bin/sh -c``.
    """

    def __init__(
        self,
        command: Optional[Command] = None,
        *,
        template: Optional[str] = None,
        shell: bool = False,
        log_dir: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        param_stdin: bool = False,
        sandboxes: Optional[Sandboxes] = None,
        output_paths: Optional[OutputPaths] = None,
        output_root: Optional[str] = None,
        decoder_hint: str = DECODER_HINT,
    ) -> None:
        """``param_stdin``: the param on the task's standard input (its text and a
        newline), not as arguments: a command without ``{}`` or a template runs as
        given. ``sandboxes``: each attempt in a fresh directory (:mod:`.sandbox`).
        ``output_paths`` chooses a task's output files (--results, --tag, --keep-order),
        below ``output_root``, where no directory may be a symbolic link (None: the log
        directory). ``decoder_hint``: how to get mapping params, for ``{name}``'s errors."""
        if isinstance(command, str):
            command = [command] if shell else shlex.split(command)
        self.command: list[str] = list(command or [])
        self.template = template
        self.shell = shell
        #: Parsed and checked now: a malformed placeholder is a ConfigError at start.
        self.builder = CommandBuilder(self.command, template, shell, decoder_hint)
        self.log_dir = log_dir
        self.param_stdin = param_stdin
        self.sandboxes = sandboxes
        self.output_paths = output_paths
        self.output_root = output_root
        self._extra_env = dict(env or {})
        self._base_env: dict[str, str] = {}
        self._devnull_action = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        #: Where large params and stdin params are written.
        self._param_files = ParamFiles()
        #: Kills the tasks if the minion dies (see :mod:`.reaper`).
        self._reaper: Optional[Reaper] = None
        self._sandbox_program: Optional[str] = None

    # -- what to run -------------------------------------------------------------------
    def to_cmd(self, param: Any) -> Command:
        """The command for ``param``: a list (argv, no shell) or a string (shell).

        With ``--shell`` it is ``/bin/sh -c SCRIPT sh VALUES...``: the values of the param
        are positional parameters, never shell text. Raises ``CommandLineError`` when the
        command line cannot run the params of this run, ``ParamError`` when this param
        cannot fill it (see :mod:`minionize.callbacks.command.builder`)."""
        return self.builder.argv(param)

    def describe(self, param: Any) -> str:
        try:
            cmd = self._command(param)
        except ParamError as exc:
            return f"# {exc}"  # names the param, abbreviated
        return cmd if isinstance(cmd, str) else shell_line(cmd)

    def program(self) -> Optional[str]:
        """The program every param runs, when it is known before any param."""
        return self.builder.program()

    # -- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        program = self.program()
        if program is not None and shutil.which(program) is None:
            raise ConfigError(not_found(program))
        make_log_dir(self.log_dir)
        if self.sandboxes is not None:
            self.sandboxes.setup()
            found = shutil.which(program) if program is not None else None
            self._sandbox_program = os.path.abspath(found) if found else None
        base = {**os.environ, **self._extra_env}
        for name in ("MINION_PARAM", "MINION_PARAM_FILE"):  # a minion run in a task
            base.pop(name, None)
        self._base_env = base
        self._reaper = Reaper()

    def run(self, task: Task) -> Result:
        delivery = task.delivery
        self.builder.begin(delivery)  # {#} is this delivery's number
        try:
            cmd = self._command(delivery.param)
        except ParamError as exc:
            return Result(Outcome.REJECTED, reason=str(exc))
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            return Result(Outcome.REJECTED, reason="empty command")
        if self.sandboxes is None:
            return self._spawn(task, cmd, argv)
        return self._run_in_sandbox(task, cmd, argv, self.sandboxes)

    def _run_in_sandbox(
        self, task: Task, cmd: Command, argv: list[str], sandboxes: Sandboxes
    ) -> Result:
        """Run ``argv`` in a fresh sandbox of its attempt (see :mod:`minionize.callbacks.process.sandbox`):
        its outputs decide a success, and are collected before it is returned."""
        # Found from here: the task runs elsewhere. The program of every param, once.
        program = self._sandbox_program if argv[0] == self.program() else None
        program = program or shutil.which(argv[0])
        if program is None:
            return cannot_start(cmd, argv, OSError(errno.ENOENT, "not found"), self.program())
        try:
            attempt = sandboxes.prepare(task.delivery, self.builder)
        except ParamError as exc:  # a missing input among them
            return Result(Outcome.REJECTED, reason=str(exc))
        try:
            result = self._spawn(
                task, cmd, sandboxes.wrap([os.path.abspath(program), *argv[1:]], attempt),
                {SANDBOX_VARIABLE: attempt.path},
            )
        except BaseException:
            shutil.rmtree(attempt.path, ignore_errors=True)
            raise
        return sandboxes.finish(attempt, result, task.stop_reason)

    def _spawn(
        self, task: Task, cmd: Command, argv: list[str], extra: Optional[dict[str, str]] = None
    ) -> Result:
        """Start ``argv`` for ``task``, wait for it, and say how it ended."""
        delivery = task.delivery
        reaper = self._reaper or self._new_reaper()
        reaper.start()
        env = {**(self._base_env or {**os.environ, **self._extra_env}), **(extra or {}),
               "MINION_PARAM_ID": str(delivery.id), "MINION_ATTEMPT": str(delivery.attempt),
               TOKEN_VARIABLE: reaper.token}
        param_file: Optional[str] = None  # removed once the task ended
        fds: list[int] = []  # descriptors to close once the task started
        try:
            param_file = self._param_files.put_param(delivery, env, self._new_reaper)
            actions: list[tuple[Any, ...]] = [self._devnull_action]
            if self.param_stdin:
                fds.append(self._param_files.stdin_fd(delivery, self._new_reaper))
                actions = [(os.POSIX_SPAWN_DUP2, fds[-1], 0)]
            try:
                out_path, err_path = open_outputs(
                    delivery, actions, fds, self.log_dir, self.output_paths, self.output_root
                )
            except UnsafeFile as exc:  # a planted symbolic link, a FIFO
                # Said now, even if a next attempt (other file names) succeeds.
                log.warning("param %s, attempt %d not run: %s", delivery.id,
                            delivery.attempt, exc)
                return Result(Outcome.FAILED, reason=str(exc))
            try:
                pid = start(task, argv, env, actions)
            except OSError as exc:
                return cannot_start(cmd, argv, exc, self.program())
            except ValueError:  # a NUL byte (the only string posix_spawn refuses)
                return nul_in_command(argv, env)
            if pid is None:
                return Result(Outcome.FAILED, reason="stopped before it started")
            for fd in fds:
                os.close(fd)
            fds = []
            status = wait(task, pid)
        finally:
            for fd in fds:
                os.close(fd)
            if param_file is not None:
                _remove(param_file)
        return ended(status, out_path, err_path)

    def terminate(self, task: Task) -> None:
        signal_group(task, signal.SIGTERM)

    def kill(self, task: Task) -> None:
        signal_group(task, signal.SIGKILL)

    def teardown(self) -> None:
        if self._reaper is not None:
            self._reaper.stop()
        self._param_files.remove()

    # -- helpers of run ----------------------------------------------------------------
    def _new_reaper(self) -> Reaper:
        """The reaper, for a ``run`` called without ``setup``."""
        with _STATE_LOCK:
            if self._reaper is None:
                self._reaper = Reaper()
            return self._reaper

    def _command(self, param: Any) -> Command:
        """What runs ``param``: :meth:`to_cmd`, except that with ``param_stdin`` a command
        without placeholders runs as given (the param is not appended)."""
        if self.param_stdin and not self.template and not any("{}" in w for w in self.command):
            return " ".join(self.command) if self.shell else list(self.command)
        return self.to_cmd(param)


_STATE_LOCK = threading.Lock()
#: The task's sandbox (absolute), with ``--sandbox``.
SANDBOX_VARIABLE = "MINION_SANDBOX"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
