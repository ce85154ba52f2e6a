"""The function callback: run a Python callable per param, in a process of its own.

Each concurrency slot of the minion gets a function process, forked from the minion with
the function already in it (nothing is pickled but the param and the reply), that runs
params one at a time over a pipe. So:

* CPU-bound functions run in parallel (no GIL shared between slots);
* a timeout or a graceful stop really stops the function: its process group gets
  SIGTERM, then SIGKILL, and a fresh function process takes the next param;
* a crash (segfault, ``os._exit``, the OOM killer) is a failed attempt whose reason
  names the signal or the exit code, never a dead minion;
* ``max_tasks_per_worker`` recycles a function process after that many params (memory
  leaks);
* every reply is matched to its request and to the process's pid (:mod:`.wire`):
  a process the function forked that answers, or still holds the pipe when the function
  returns, fails that attempt and its process is replaced; a process that dies or writes
  garbage is a failed attempt, never a wait without end;
* what the function starts carries the reaper's token (:mod:`.reaper`): it does not
  outlive the minion, even a ``setsid`` child, even after a SIGKILL of the minion.

An exception raised by the function is a failed attempt (retried, then dead-lettered),
its traceback kept in the report. What the function returns is its task's result: on an
engine that keeps results, its JSON text goes back with the ack (``minion-queue
results``); a value JSON cannot hold exactly, or too large, is a failed attempt
(:mod:`minionize.task_result`). ``FuncCallback(f, mode="thread")`` keeps the old way
(the function runs in a thread of the minion: it shares the minion's memory, and cannot
be stopped), for functions that must see the minion's objects.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import threading
import traceback
from typing import Any, Callable, Optional

from ...task_result import UnstorableResult, encode_result
from ..base import Callback, Outcome, Result, Task
from ..process.reaper import Reaper
from ..task_io import describe_exit
from . import wire
from .wire import FunctionProcess

#: Lines of a function's traceback kept in the report.
TRACEBACK_LINES = 6
#: How often a function process checks that its minion is still there.
PARENT_CHECK_SECONDS = 1.0


def describe_status(status: int) -> str:
    """A function process's wait status in words: ``killed by SIGSEGV``, ``exit code 3``."""
    return describe_exit(os.waitstatus_to_exitcode(status))


def failure_of(exc: BaseException) -> tuple[str, str]:
    """``(reason, traceback tail)`` of an exception raised by a function."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}", "".join(lines[-TRACEBACK_LINES:]).rstrip()


def _outcome(func: Callable[[Any], Any], param: Any, *, keep_value: bool,
             result_max: Optional[int]) -> tuple[bool, Any, str, str]:
    """``(ok, value, reason, tail)`` of one call: ``value`` is the return value itself
    (``keep_value``), its JSON text for the queue (``result_max``), or None."""
    try:
        value = func(param)
    except BaseException as exc:  # SystemExit too: a failed attempt, not an exit
        reason, tail = failure_of(exc)
        return False, None, reason, tail
    if keep_value:
        return True, value, "", ""
    if result_max is None:
        return True, None, "", ""
    try:
        return True, encode_result(value, result_max), "", ""
    except UnstorableResult as exc:
        return False, None, str(exc), ""


def _signal_process(process: Any, signum: int) -> None:
    """Signal the group of a task's function process (under the task's lock)."""
    if not isinstance(process, FunctionProcess):
        return
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class FuncCallback(Callback):
    """``FuncCallback(f)`` calls ``f(param)`` for each param, in a function process.

    ``max_tasks_per_worker``: replace a function process after that many params (None:
    never).
    ``mode="thread"``: run ``f`` in the minion's slot thread instead (the old way).
    """

    def __init__(
        self,
        func: Callable[[Any], Any],
        *,
        max_tasks_per_worker: Optional[int] = None,
        mode: str = "process",
    ) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', not {mode!r}")
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError("max_tasks_per_worker must be at least 1")
        self.func = func
        self.max_tasks_per_worker = max_tasks_per_worker
        self.mode = mode
        # A function process can be stopped (and its success then ignored); a function
        # running in the minion's own thread cannot, so what it returns still counts.
        self.can_stop = mode == "process"
        #: Whether the process sends the function's return value back (see :meth:`call`).
        self.keep_value = False
        #: Set by :meth:`keep_results`: the return value's JSON goes to the queue.
        self.result_max: Optional[int] = None
        self._idle: list[FunctionProcess] = []
        self._all: set[FunctionProcess] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._seq = itertools.count(1)
        #: Kills what the function processes started if the minion dies (:mod:`.reaper`).
        self._reaper: Optional[Reaper] = None

    def keep_results(self, max_bytes: int) -> None:
        self.result_max = max_bytes

    # -- running a param ----------------------------------------------------------------
    def run(self, task: Task) -> Result:
        result, _ = self.call(task)
        return result

    def call(self, task: Task) -> tuple[Result, Any]:
        """Run the function on ``task.param``: its Result (with the JSON text of the
        return value for the queue, after :meth:`keep_results`) and, when
        ``keep_value`` is set and it succeeded, the return value itself."""
        exit_code: Optional[int] = None
        if self.mode == "thread":
            ok, value, reason, tail = _outcome(self.func, task.param, keep_value=self.keep_value,
                                               result_max=self.result_max)
        else:
            ok, value, reason, tail, exit_code = self._call_in_process(task)
        if not ok:
            return Result(Outcome.FAILED, reason=reason, stderr_tail=tail,
                          exit_code=exit_code), None
        if self.keep_value:
            return Result(Outcome.OK), value
        return Result(Outcome.OK, result=value), None

    def _call_in_process(self, task: Task) -> tuple[bool, Any, str, str, Optional[int]]:
        """The call in a function process: ``(ok, value, reason, tail, exit code)``; a
        crash or a stop is a failure whose reason names the signal or the exit code."""
        process = task.attach(self._take_process)
        if process is None:
            return False, None, "stopped before it started", "", None
        seq = next(self._seq)
        try:
            try:
                data = wire.frame(("call", seq, self.wire_param(task, process)))
            except Exception as exc:  # the param cannot be pickled: nothing was sent
                self._give_back(process, ran=False)
                return False, None, f"cannot send the param: {exc}", "", None
            try:
                wire.write_all(process.fd, data)
                outcome = process.reply(seq)
            except (wire.ProcessGone, OSError):
                # The process died: a crash, or our own SIGTERM/SIGKILL (timeout, stop).
                self._discard(process)
                status = process.reap()
                return (False, None, describe_status(status), "",
                        os.waitstatus_to_exitcode(status))
            except wire.WireError as exc:
                self._discard(process, kill=True)
                return False, None, str(exc), "", None
        finally:
            task.detach()
        self.replied(process, outcome[0], outcome[1])
        self._give_back(process)
        ok, value, reason, tail = outcome
        return ok, value, reason, tail, None

    def wire_param(self, task: Task, process: FunctionProcess) -> Any:
        """What goes to the function process for ``task`` (a subclass may add to the
        param what that process does not have yet: see ``process.memo``)."""
        return task.param

    def replied(self, process: FunctionProcess, ok: bool, value: Any) -> None:
        """The function process answered (a subclass notes what it now has)."""

    def terminate(self, task: Task) -> None:
        self._signal(task, signal.SIGTERM)

    def kill(self, task: Task) -> None:
        self._signal(task, signal.SIGKILL)

    @staticmethod
    def _signal(task: Task, signum: int) -> None:
        task.signal(_signal_process, signum)

    def describe(self, param: Any) -> str:
        name = getattr(self.func, "__qualname__", repr(self.func))
        return f"{name}({param!r})"

    # -- the function processes --------------------------------------------------------
    def setup(self) -> None:
        if self.mode == "process":
            self._new_reaper()

    def _new_reaper(self) -> Reaper:
        with self._lock:
            if self._reaper is None:
                self._reaper = Reaper()
            reaper = self._reaper
        reaper.start()
        return reaper

    def prestart(self) -> None:
        """Fork a function process now, kept for the first param (a pool worker: its
        first chunk does not wait for a fork, and the fork happens before the minion
        starts its threads). A fork that fails is tried again by the first param."""
        if self.mode != "process":
            return
        with self._lock:
            if self._all or self._closed:
                return
        try:
            process = self._take_process()
        except OSError:
            return
        self._give_back(process, ran=False)

    def _take_process(self) -> FunctionProcess:
        with self._lock:
            while self._idle:
                process = self._idle.pop()
                if process.running():
                    return process
                # Died while idle (the OOM killer, a kill from outside): this param never
                # ran on it, so it costs no attempt; a fresh process takes it.
                self._all.discard(process)
                process.close()
            inherited = [fd for w in self._all for fd in (w.fd, w.receiver.exited_fd)
                         if fd is not None]
        run = functools.partial(_outcome, self.func, keep_value=self.keep_value,
                                result_max=self.result_max)
        process = wire.fork_process(run, inherited, self._reaper or self._new_reaper(),
                                    PARENT_CHECK_SECONDS)
        with self._lock:
            self._all.add(process)
        return process

    def _give_back(self, process: FunctionProcess, ran: bool = True) -> None:
        process.tasks += ran
        recycle = self.max_tasks_per_worker is not None and process.tasks >= self.max_tasks_per_worker
        with self._lock:
            if not recycle and not process.spoiled and not self._closed:
                self._idle.append(process)
                return
            self._all.discard(process)
        process.stop(kill=process.spoiled)

    def _discard(self, process: FunctionProcess, kill: bool = False) -> None:
        """Forget a process that died (or must: ``kill``, with what it forked)."""
        with self._lock:
            self._all.discard(process)
        if kill:
            process.stop(kill=True)
        else:
            process.close()

    def teardown(self) -> None:
        with self._lock:
            self._closed = True
            processes, self._idle = list(self._all), []
            self._all.clear()
            reaper, self._reaper = self._reaper, None
        for process in processes:
            process.stop()
        if reaper is not None:
            reaper.stop()  # kills what the functions left running (setsid children)

    def worker_pids(self) -> list[int]:
        """The ids of the live function processes (for tests and reports)."""
        with self._lock:
            return sorted(w.pid for w in self._all)

