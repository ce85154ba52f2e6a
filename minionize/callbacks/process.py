"""The process callback (the default): run a program once per param.

The child runs in its own process group (so a timeout or a shutdown stops the whole
tree), with standard input from /dev/null (it must not eat the minion's params), and
``MINION_PARAM`` (JSON), ``MINION_PARAM_ID`` and ``MINION_ATTEMPT`` in its environment.
No shell is involved unless one is asked for (``--shell``, or a ``to_cmd`` that returns
a string), so a param is never interpreted as a command.

Processes are started with ``os.posix_spawnp`` (vfork + exec): the per-task cost of the
minion must stay a small fraction of the cost of a process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from ..engines.base import Delivery
from ..errors import ConfigError
from .base import Callback, Outcome, Result, Task
from .command import CommandBuilder, ParamError, shell_line

Command = Union[str, Sequence[str]]

#: Signals the child must see with their default action, whatever the minion did with
#: them (Python ignores SIGPIPE; the minion handles SIGINT and SIGTERM itself).
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGQUIT")
    if hasattr(signal, name)
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096


def param_json(param: Any) -> str:
    """The param as JSON for ``MINION_PARAM`` (its repr, as a JSON string, if JSON cannot
    encode it)."""
    try:
        return json.dumps(param, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(repr(param))


def safe_name(text: str) -> str:
    """A file-name safe form of a delivery id."""
    return _UNSAFE_NAME.sub("_", text)[:120] or "param"


def log_paths(log_dir: str, delivery_id: str, attempt: int) -> tuple[str, str]:
    """Where a task's stdout and stderr are saved: ``<dir>/<id>.<attempt>.out|.err``."""
    base = os.path.join(log_dir, f"{safe_name(delivery_id)}.{attempt}")
    return base + ".out", base + ".err"


def read_tail(path: str, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - STDERR_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessCallback(Callback):
    """Run a program per param.

    ``command`` is the program and its arguments (a list), a template is the other way
    to say where the param goes. Subclass and override :meth:`to_cmd` to build the command
    yourself: return a list to run it as argv, a string to run it with ``/bin/sh -c``.
    """

    #: Chooses the files a task's stdout and stderr go to, from the delivery and the
    #: --log-dir files (or None): set for --results, --tag, --keep-order (habits.py).
    output_paths: Optional[Callable[[Delivery, Optional[str], Optional[str]], tuple[str, str]]] = None

    def __init__(
        self,
        command: Optional[Command] = None,
        *,
        template: Optional[str] = None,
        shell: bool = False,
        log_dir: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        if isinstance(command, str):
            command = [command] if shell else shlex.split(command)
        self.command: list[str] = list(command or [])
        self.template = template
        self.shell = shell
        #: Parsed and checked now: a malformed placeholder is a ConfigError at start.
        self.builder = CommandBuilder(self.command, template, shell)
        self.log_dir = log_dir
        self._extra_env = dict(env or {})
        self._base_env: dict[str, str] = {}
        self._devnull_action = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)

    # -- what to run -------------------------------------------------------------------
    def to_cmd(self, param: Any) -> Command:
        """The command for ``param``: a list (argv, no shell) or a string (shell).

        With ``--shell`` it is ``/bin/sh -c SCRIPT sh VALUES...``: the values of the param
        are positional parameters, never shell text. Raises ``CommandLineError`` when the
        command line cannot run the params of this run, ``ParamError`` when this param
        cannot fill it (see :mod:`minionize.callbacks.command`)."""
        return self.builder.argv(param)

    def describe(self, param: Any) -> str:
        try:
            cmd = self.to_cmd(param)
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
            raise ConfigError(
                f"command not found: {program!r}: check its name, or give its full path"
            )
        if self.log_dir:
            try:
                os.makedirs(self.log_dir, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"MINION_LOG_DIR={self.log_dir!r} cannot be created: {exc}") from None
        self._base_env = {**os.environ, **self._extra_env}

    def run(self, task: Task) -> Result:
        delivery = task.delivery
        self.builder.begin(delivery)  # {#} is this delivery's number
        try:
            cmd = self.to_cmd(delivery.param)
        except ParamError as exc:
            return Result(Outcome.REJECTED, reason=str(exc))
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            return Result(Outcome.REJECTED, reason="empty command")
        env = self._base_env or {**os.environ, **self._extra_env}
        env = {
            **env,
            "MINION_PARAM": param_json(delivery.param),
            "MINION_PARAM_ID": str(delivery.id),
            "MINION_ATTEMPT": str(delivery.attempt),
        }
        actions: list[tuple[Any, ...]] = [self._devnull_action]
        out_path = err_path = None
        if self.log_dir:
            out_path, err_path = log_paths(self.log_dir, str(delivery.id), delivery.attempt)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            actions.append((os.POSIX_SPAWN_OPEN, 1, out_path, flags, 0o644))
            actions.append((os.POSIX_SPAWN_OPEN, 2, err_path, flags, 0o644))
        if self.output_paths is not None:  # --results, --tag, --keep-order
            out_path, err_path = self.output_paths(delivery, out_path, err_path)
            new = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            actions[1:] = [(os.POSIX_SPAWN_OPEN, fd, path, new, 0o644)
                           for fd, path in ((1, out_path), (2, err_path))]
        with task.lock:
            if task.stop_reason is not None:
                return Result(Outcome.FAILED, reason="stopped before it started")
            try:
                pid = os.posix_spawnp(
                    argv[0], argv, env,
                    file_actions=actions, setpgroup=0, setsigdef=_DEFAULT_SIGNALS,
                )
            except FileNotFoundError:
                return Result(Outcome.FAILED, reason=f"command not found: {argv[0]}", exit_code=127)
            except PermissionError:
                return Result(Outcome.FAILED, reason=f"permission denied: {argv[0]}", exit_code=126)
            except OSError as exc:
                return Result(Outcome.FAILED, reason=f"cannot start {argv[0]}: {exc}", exit_code=126)
            task.handle = pid
        # Wait without reaping, so that the monitor never signals a reused process id.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with task.lock:
            _, status = os.waitpid(pid, 0)
            task.handle = None
            if task.stop_reason is not None:
                # The leader is gone; leave no straggler of its group behind.
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return Result(Outcome.OK, exit_code=0, stdout_path=out_path, stderr_path=err_path)
        return Result(
            Outcome.FAILED,
            reason=describe_exit(code),
            exit_code=code,
            stderr_tail=read_tail(err_path) if err_path else "",
            stdout_path=out_path,
            stderr_path=err_path,
        )

    def terminate(self, task: Task) -> None:
        self._signal(task, signal.SIGTERM)

    def kill(self, task: Task) -> None:
        self._signal(task, signal.SIGKILL)

    @staticmethod
    def _signal(task: Task, signum: int) -> None:
        with task.lock:
            pid = task.handle
            if pid is None:
                return
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                pass
