"""A task's process for the process callback (:mod:`.process`): started with
``os.posix_spawnp`` in its own process group, waited for without reaping it first, its
group signalled; its param handed over (``MINION_PARAM`` or its file, standard input:
:class:`ParamFiles`) and its log files opened here; and why a program could not start,
in words.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ...errors import CommandLineError
from ..base import Outcome, Result, Task
from ..command.builder import param_text
from ..task_io import (
    UnsafeFile,
    describe_exit,
    log_paths,
    open_regular,
    param_json,
    read_tail,
    safe_name,
)

if TYPE_CHECKING:
    from ...engines.base import Delivery
    from .reaper import Reaper

Command = Union[str, Sequence[str]]
#: Chooses the files of an attempt's stdout and stderr from its delivery and its
#: --log-dir files (None without --log-dir).
OutputPaths = Callable[["Delivery", Optional[str], Optional[str]], "tuple[str, str]"]

#: Signals the child must see with their default action, whatever the minion did with
#: them (Python ignores SIGPIPE; the minion handles SIGINT and SIGTERM itself).
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGTERM", "SIGQUIT")
    if hasattr(signal, name)
)
#: Linux's limit on one argument or environment string (MAX_ARG_STRLEN, 32 pages).
MAX_ARG_STRLEN = 131072
#: Above this many bytes, the param is not put in MINION_PARAM (one environment string
#: cannot exceed MAX_ARG_STRLEN, and the environment shares ARG_MAX with the arguments):
#: the task finds it in the file named by MINION_PARAM_FILE instead.
PARAM_ENV_BYTES = 65536


class ParamFiles:
    """Private files for the params too large for the environment and for the params
    given on standard input, in a directory made on first use; the reaper removes it if
    the minion dies, :meth:`remove` at teardown."""

    def __init__(self) -> None:
        self.directory: Optional[str] = None
        self._lock = threading.Lock()

    def write(self, delivery: Delivery, suffix: str, text: str, reaper: Callable[[], Reaper]) -> str:
        """Write ``text`` to a private file for this attempt; returns its path."""
        with self._lock:
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="minionize-params-")
                reaper().clean_up(self.directory)
        name = f"{safe_name(str(delivery.id))}.{delivery.attempt}{suffix}"
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        return path

    def put_param(self, delivery: Delivery, env: dict[str, str],
                  reaper: Callable[[], Reaper]) -> Optional[str]:
        """Put the param's JSON in ``env``: as ``MINION_PARAM``, or, above
        :data:`PARAM_ENV_BYTES`, in a file named by ``MINION_PARAM_FILE``, whose path is
        returned (to remove once the task ended)."""
        text = param_json(delivery.param)
        if _fits_in_env(text):
            env["MINION_PARAM"] = text
            return None
        path = self.write(delivery, ".json", text, reaper)
        env["MINION_PARAM_FILE"] = path
        return path

    def stdin_fd(self, delivery: Delivery, reaper: Callable[[], Reaper]) -> int:
        """A descriptor that reads the param's text and a newline (``--param-stdin``),
        its file already removed; the caller closes it once the task started."""
        path = self.write(delivery, ".in", param_text(delivery.param) + "\n", reaper)
        fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
        return fd

    def remove(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _fits_in_env(text: str) -> bool:
    # Four bytes per character at most: count the bytes only when it could matter.
    if len(text) * 4 <= PARAM_ENV_BYTES:
        return True
    return len(text.encode("utf-8", "surrogateescape")) <= PARAM_ENV_BYTES


def start(task: Task, argv: list[str], env: dict[str, str], actions: list[tuple[Any, ...]]) -> Optional[int]:
    """Spawn ``argv`` for ``task`` (its pid is attached to the task); None when a stop
    came first. Raises OSError when it cannot start."""
    pid: Optional[int] = task.attach(
        os.posix_spawnp, argv[0], argv, env, file_actions=actions, setpgroup=0,
        setsigdef=_DEFAULT_SIGNALS,
    )
    return pid


def wait(task: Task, pid: int) -> int:
    """Wait for the task's process to end; its wait status."""
    # Wait without reaping, and detach before reaping, so that a stop never signals a
    # reused process id.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    task.detach()
    _, status = os.waitpid(pid, 0)
    if task.stop_reason is not None:
        # The leader is gone; leave no straggler of its group behind.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return status


def ended(status: int, out_path: Optional[str], err_path: Optional[str]) -> Result:
    """The result of a process that ended with wait status ``status``."""
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


def signal_group(task: Task, signum: int) -> None:
    """Send ``signum`` to the process group of the task, if it runs."""
    task.signal(_killpg, signum)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def open_log(path: str, log_dir: Optional[str], root: Optional[str] = None) -> int:
    """Open a task's log file here, not in the child, so that a failure names the log
    directory, never the program; a log directory removed during a run is recreated.
    Never through a symbolic link (:func:`open_regular`, below ``root``): a planted one
    is an :class:`UnsafeFile`, a failure of this attempt only."""
    try:
        return open_regular(path, root=root, make_dirs=True)
    except FileNotFoundError:
        pass
    except UnsafeFile:
        raise
    except OSError as exc:
        raise _log_error(path, log_dir, exc) from None
    try:
        os.makedirs(root or os.path.dirname(path) or ".", exist_ok=True)
        return open_regular(path, root=root, make_dirs=True)
    except UnsafeFile:
        raise
    except OSError as exc:
        raise _log_error(path, log_dir, exc) from None


def _log_error(path: str, log_dir: Optional[str], exc: OSError) -> CommandLineError:
    return CommandLineError(
        f"MINION_LOG_DIR={log_dir!r}: cannot write the task's log {path}: "
        f"{exc.strerror or exc}"
    )


def redirect(
    actions: list[tuple[Any, ...]], fds: list[int], out_path: str, err_path: str,
    log_dir: Optional[str], root: Optional[str] = None,
) -> None:
    """Send the task's stdout and stderr to these files: open them (their descriptors
    appended to ``fds``, to close once it started) and add their spawn actions."""
    for path, target in ((out_path, 1), (err_path, 2)):
        fds.append(open_log(path, log_dir, root))
        actions.append((os.POSIX_SPAWN_DUP2, fds[-1], target))


def open_outputs(
    delivery: Delivery, actions: list[tuple[Any, ...]], fds: list[int], log_dir: Optional[str],
    output_paths: Optional[OutputPaths], output_root: Optional[str],
) -> tuple[Optional[str], Optional[str]]:
    """Open the task's output files (--log-dir, and the files ``output_paths`` chooses:
    --results, --tag, --keep-order) and add their spawn actions; their paths (None: the
    minion's own streams)."""
    out_path = err_path = None
    if log_dir:
        out_path, err_path = log_paths(log_dir, str(delivery.id), delivery.attempt)
        if output_paths is None:
            redirect(actions, fds, out_path, err_path, log_dir)
    if output_paths is not None:
        out_path, err_path = output_paths(delivery, out_path, err_path)
        redirect(actions, fds, out_path, err_path, log_dir, output_root or log_dir)
    return out_path, err_path


def cannot_start(cmd: Command, argv: Sequence[str], exc: OSError, every_param: Optional[str]) -> Result:
    """The program did not start. A program every param runs (``every_param``) that
    cannot run is a mistake of the command line (:class:`CommandLineError`: the minion
    stops, exit 2, the param is given back); a param too large for arguments is rejected
    at once."""
    program = argv[0]
    if exc.errno == errno.E2BIG:
        size = sum(len(os.fsencode(word)) + 1 for word in argv)
        return Result(
            Outcome.REJECTED,
            reason=(
                f"the param is too large to pass as arguments ({size} bytes of "
                f"arguments; the system allows {MAX_ARG_STRLEN} bytes per argument): "
                "run with --param-stdin (MINION_PARAM_STDIN=1) to get it on standard "
                "input instead (a large one is also in the file $MINION_PARAM_FILE)"
            ),
            exit_code=126,
        )
    if exc.errno == errno.ENOENT:
        message, code = not_found(program), 127
    elif exc.errno == errno.EACCES:
        message, code = not_executable(program), 126
    elif exc.errno == errno.ENOEXEC:
        message, code = (
            f"cannot run {program!r}: the system cannot execute it (Exec format error): "
            f"a script needs a first line such as '#!/bin/sh', or run it through its "
            f"interpreter (minionize sh {program} ...)"
        ), 126
    else:
        message, code = f"cannot start {program}: {exc.strerror or exc}", 126
    if isinstance(cmd, str) or program == every_param:
        raise CommandLineError(message)
    return Result(Outcome.FAILED, reason=message, exit_code=code)


def nul_in_command(argv: Sequence[str], env: dict[str, str]) -> Result:
    """The result of a command that holds a NUL byte (``posix_spawn`` raised
    ValueError): no argument or environment string can hold one, whatever attempt, so
    the param is rejected at once (a dead letter saying why)."""
    where = next((f"argument {i}" for i, word in enumerate(argv) if "\0" in word), None)
    if where is None:
        where = next((f"environment variable {name}" for name, value in env.items()
                      if "\0" in name or "\0" in value), "the command")
    return Result(
        Outcome.REJECTED,
        reason=(
            f"the param holds a NUL byte, which no argument or environment variable can "
            f"hold ({where}): run with --param-stdin (MINION_PARAM_STDIN=1) to get it "
            "on standard input (MINION_PARAM holds its JSON, where the NUL is escaped)"
        ),
        exit_code=126,
    )


def not_found(program: str) -> str:
    """Why ``program`` cannot be found: missing, or there but not executable."""
    candidates = [program] if os.sep in program else [
        os.path.join(directory, program)
        for directory in os.environ.get("PATH", os.defpath).split(os.pathsep)
    ]
    if any(os.path.isfile(path) for path in candidates):
        return not_executable(program)
    if os.path.isfile(program):  # in the working directory, which PATH does not search
        return f"command not found: {program!r}: did you mean ./{program}?"
    return f"command not found: {program!r}: check its name, or give its full path"


def not_executable(program: str) -> str:
    return (
        f"{program!r} is not executable: make it so (chmod +x {program}), or run it "
        f"through its interpreter (minionize sh {program} ...)"
    )
