"""The function callback: run a Python callable per param, in a worker process.

Each concurrency slot of the minion gets a worker process, forked from the minion with
the function already in it (nothing is pickled but the param and the reply), that runs
params one at a time over a pipe. So:

* CPU-bound functions run in parallel (no GIL shared between slots);
* a timeout or a graceful stop really stops the function: its worker's process group
  gets SIGTERM, then SIGKILL, and a fresh worker takes the next param;
* a crash (segfault, ``os._exit``, the OOM killer) is a failed attempt whose reason
  names the signal or the exit code, never a dead minion;
* ``max_tasks_per_worker`` recycles a worker after that many params (memory leaks).

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
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable, Generic, Optional, TypeVar

from ..task_result import UnstorableResult, encode_result
from ._task_io import describe_exit
from .base import Callback, Outcome, Result, Task

R = TypeVar("R")
#: Lines of a function's traceback kept in the report.
TRACEBACK_LINES = 6
#: How often a worker checks that its minion is still there.
PARENT_CHECK_SECONDS = 1.0


def describe_status(status: int) -> str:
    """A worker's wait status in words: ``killed by SIGSEGV``, ``exit code 3``."""
    return describe_exit(os.waitstatus_to_exitcode(status))


def failure_of(exc: BaseException) -> tuple[str, str]:
    """``(reason, traceback tail)`` of an exception raised by a function."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}", "".join(lines[-TRACEBACK_LINES:]).rstrip()


def _watch_parent(parent: int) -> None:
    """In the worker: exit when the minion is gone (a minion killed with SIGKILL must not
    leave its function running for hours)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="minion-parent-watch", daemon=True).start()


def _outcome(func: Callable[[Any], Any], param: Any, keep_value: bool,
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


def _serve(func: Callable[[Any], Any], conn: Connection, keep_value: bool,
           result_max: Optional[int]) -> None:
    """The worker's loop (in the child): a param in, ``(ok, value, reason, tail)`` out."""
    while True:
        try:
            param = conn.recv()
        except (EOFError, OSError):
            return
        outcome = _outcome(func, param, keep_value, result_max)
        try:
            conn.send(outcome)
        except Exception as exc:  # an unpicklable return value
            conn.send((False, None, f"the return value cannot be sent back: {exc}", ""))


class _Worker:
    """One forked worker process and the parent's end of its pipe."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.tasks = 0
        self.status: Optional[int] = None

    def running(self) -> bool:
        """False once the worker has exited (it is then reaped)."""
        if self.status is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return False
        if pid:
            self.status = status
            return False
        return True

    def reap(self) -> int:
        """Wait for the (dying) worker; its wait status."""
        if self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = 0
        return self.status

    def stop(self) -> None:
        """Close the pipe (the worker exits at EOF) and reap it; kill it if it lingers."""
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                os.killpg(self.pid, signal.SIGKILL)
        except (ChildProcessError, ProcessLookupError, PermissionError):
            return
        self.reap()


class FuncCallback(Callback):
    """``FuncCallback(f)`` calls ``f(param)`` for each param, in a worker process.

    ``max_tasks_per_worker``: replace a worker after that many params (None: never).
    ``mode="thread"``: run ``f`` in the minion's worker thread instead (the old way).
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
        # A worker process can be stopped (and its success then ignored); a function
        # running in the minion's own thread cannot, so what it returns still counts.
        self.can_stop = mode == "process"
        #: Whether the worker sends the function's return value back (see :meth:`call`).
        self.keep_value = False
        #: Set by :meth:`keep_results`: the return value's JSON goes to the queue.
        self.result_max: Optional[int] = None
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

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
            ok, value, reason, tail = _outcome(self.func, task.param, self.keep_value,
                                               self.result_max)
        else:
            ok, value, reason, tail, exit_code = self._call_worker(task)
        if not ok:
            return Result(Outcome.FAILED, reason=reason, stderr_tail=tail,
                          exit_code=exit_code), None
        if self.keep_value:
            return Result(Outcome.OK), value
        return Result(Outcome.OK, result=value), None

    def _call_worker(self, task: Task) -> tuple[bool, Any, str, str, Optional[int]]:
        """The call in a worker process: ``(ok, value, reason, tail, exit code)``; a
        crash or a stop is a failure whose reason names the signal or the exit code."""
        with task.lock:
            if task.stop_reason is not None:
                return False, None, "stopped before it started", "", None
            worker = self._take_worker()
            task.handle = worker
        try:
            worker.conn.send(task.param)
            ok, value, reason, tail = worker.conn.recv()
        except (EOFError, OSError):
            # The worker died: a crash, or our own SIGTERM/SIGKILL (timeout, stop).
            with task.lock:
                task.handle = None
            self._discard(worker)
            status = worker.reap()
            return False, None, describe_status(status), "", os.waitstatus_to_exitcode(status)
        except Exception as exc:  # the param cannot be pickled: nothing was sent
            with task.lock:
                task.handle = None
            self._give_back(worker)
            return False, None, f"cannot send the param: {exc}", "", None
        with task.lock:
            task.handle = None
        self._give_back(worker)
        return ok, value, reason, tail, None

    def terminate(self, task: Task) -> None:
        self._signal(task, signal.SIGTERM)

    def kill(self, task: Task) -> None:
        self._signal(task, signal.SIGKILL)

    @staticmethod
    def _signal(task: Task, signum: int) -> None:
        with task.lock:
            worker = task.handle
            if not isinstance(worker, _Worker):
                return
            try:
                os.killpg(worker.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def describe(self, param: Any) -> str:
        name = getattr(self.func, "__qualname__", repr(self.func))
        return f"{name}({param!r})"

    # -- the workers ----------------------------------------------------------------------
    def _take_worker(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.running():
                    return worker
                # Died while idle (the OOM killer, a kill from outside): this param never
                # ran on it, so it costs no attempt; a fresh worker takes it.
                self._all.discard(worker)
                worker.conn.close()
            others = [w.conn for w in self._all]
        worker = self._fork(others)
        with self._lock:
            self._all.add(worker)
        return worker

    def _fork(self, others: list[Connection]) -> _Worker:
        parent_end, child_end = Pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 0
            try:
                os.setpgid(0, 0)
                _watch_parent(parent)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Ctrl-C reaches the minion, which stops its tasks itself.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                parent_end.close()
                for conn in others:
                    conn.close()
                _serve(self.func, child_end, self.keep_value, self.result_max)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        child_end.close()
        try:
            os.setpgid(pid, pid)  # also from here: no race with a signal sent at once
        except OSError:
            pass
        return _Worker(pid, parent_end)

    def _give_back(self, worker: _Worker) -> None:
        worker.tasks += 1
        recycle = self.max_tasks_per_worker is not None and worker.tasks >= self.max_tasks_per_worker
        with self._lock:
            if not recycle and not self._closed:
                self._idle.append(worker)
                return
            self._all.discard(worker)
        worker.stop()

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        try:
            worker.conn.close()
        except OSError:
            pass

    def teardown(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._all.clear()
        for worker in workers:
            worker.stop()

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for tests and reports)."""
        with self._lock:
            return sorted(w.pid for w in self._all)


class MinionTask(Generic[R]):
    """A function made into a minion by :func:`task`: still callable as before, plus
    :meth:`run` to serve params from the configured queue."""

    def __init__(self, func: Callable[[Any], R], **overrides: Any) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.max_tasks_per_worker: Optional[int] = overrides.pop("max_tasks_per_worker", None)
        self.overrides = overrides

    def __call__(self, param: Any) -> R:
        return self.func(param)

    def callback(self) -> FuncCallback:
        return FuncCallback(self.func, max_tasks_per_worker=self.max_tasks_per_worker)

    def run(self, **overrides: Any) -> int:
        """Run a minion that calls this function for each param; returns the exit code.

        Settings come from the environment and ``.env``; keyword arguments
        (``concurrency=4``, ``max_attempts=5``, ...) override them.
        """
        from ..minion import minionizer

        return minionizer(self.callback(), **{**self.overrides, **overrides}).run()


def task(
    func: Optional[Callable[[Any], R]] = None, **overrides: Any
) -> Any:
    """Decorator: ``@minionize.task`` or ``@minionize.task(max_attempts=5)``.

    ``max_tasks_per_worker=N`` recycles the function's worker process every N params.

    >>> @task
    ... def simulate(param): ...
    >>> simulate.run()            # doctest: +SKIP
    """
    if func is None:
        return lambda f: MinionTask(f, **overrides)
    return MinionTask(func, **overrides)
