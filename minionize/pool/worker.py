"""A pool worker: an ordinary minion on the run directory's sweep queue.

``python -m minionize.pool.worker RUNDIR --name NAME [--parent PID]`` is what the local
backend starts and what each SLURM array task runs. Its callback is a
:class:`~minionize.callbacks.function.callback.FuncCallback` whose function runs one chunk: it
loads the call's function and the chunk's items (pickles, read only from a private run
directory, or asked of the caller over its socket), calls the function on each item, and
sends the outcomes back as one record that the minion appends to its own results file
before it acks the chunk (or that goes back over the socket). So leases, retries after a
crash and dead letters are the queue's, as for any minion.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional, Union

from ..callbacks.base import Outcome, Result, Task
from ..callbacks.function.callback import FuncCallback
from ..callbacks.function.wire import FunctionProcess
from ..config import Settings
from ..engines.base import Delivery
from ..engines.sweep.engine import SweepEngine
from .channel import ChannelEngine
from .errors import PoolError
from .pickling import encode_outcome, load_function, plain_values
from .rundir import append_record, check_private, read_private, write_private

#: How often an idle worker takes from the queue even when the bell did not ring
#: (params that come back after a failure or an expired lease).
FULL_LOOK_SECONDS = 0.25
#: The exit code of a worker whose initializer raised.
EXIT_INITIALIZER = 3


class PoolEngine(SweepEngine):
    """The sweep queue of a run directory: it ends only once the pool is closed, and an
    idle worker notices a new call within ``tick`` seconds (it watches the bell file
    instead of taking the queue's lock again and again)."""

    def __init__(self, rundir: str, *, lease: float, max_attempts: int, tick: float) -> None:
        super().__init__(os.path.join(rundir, "queue"), lease=lease, max_attempts=max_attempts)
        self.closed_path = os.path.join(rundir, "closed")
        self.bell_path = os.path.join(rundir, "bell")
        self.tick = tick
        # A chunk is a batch already: never claim ahead, or one worker would hold the
        # chunks the others wait for.
        self.claim_ahead = False
        #: True once the minion stops: an idle take returns at once (a quick terminate).
        self.stopping: Callable[[], bool] = lambda: False

    def _bell(self) -> tuple[int, int, int]:
        try:
            info = os.stat(self.bell_path)
        except OSError:
            return (0, 0, 0)
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            rung = self._bell()
            got = super().take(max_count, 0.0)
            if got or os.path.exists(self.closed_path):
                return got
            look_again = min(deadline, time.monotonic() + FULL_LOOK_SECONDS)
            while time.monotonic() < look_again and self._bell() == rung and not self.stopping():
                time.sleep(self.tick)
            if time.monotonic() >= deadline or self.stopping():
                return []

    def exhausted(self) -> bool:
        return os.path.exists(self.closed_path) and super().exhausted()


_loaded: dict[str, Any] = {}


def run_chunk(rundir: str, param: Any, channel: bool = False) -> Any:
    """In the worker's function process: run one chunk, return its record (None when
    its call is over: its files are gone), or, when it came over the ``channel`` (with
    its items: ``(param, function or None, items)``), the number of the call whose
    function this process holds and the record."""
    if channel:
        return _run_sent_chunk(*param)
    call = param["call"]
    func_name = os.path.join("calls", f"{call}.func")
    items_name = os.path.join("calls", f"{call}.items.{param['batch']}")
    if not os.path.exists(os.path.join(rundir, func_name)):
        return None
    if _loaded.get("call") != call:
        _loaded.clear()
        _loaded["func"] = load_function(read_private(rundir, func_name))
        _loaded["call"] = call
    func = _loaded["func"]
    try:
        data = read_private(rundir, items_name, param["offset"], param["size"])
    except PoolError:
        if not os.path.exists(os.path.join(rundir, items_name)):
            return None  # the call is over (its batch came back, run twice)
        raise
    return _record(func, param, pickle.loads(data))


def _run_sent_chunk(param: dict[str, Any], func_data: Optional[bytes],
                    data: bytes) -> tuple[int, bytes]:
    """A chunk whose pickles came from the caller over its socket (the function only
    when this process does not hold it yet): the call whose function this process now
    holds, and the chunk's record (which the minion sends with its ack)."""
    call = param["call"]
    if func_data is not None:
        _loaded.clear()
        _loaded["func"] = load_function(func_data)
        _loaded["call"] = call
    elif _loaded.get("call") != call:
        raise PoolError(f"the function of call {call} did not come with its chunk")
    return int(call), _record(_loaded["func"], param, pickle.loads(data))


def _record(func: Callable[..., Any], param: dict[str, Any], items: list[Any]) -> bytes:
    """The chunk's record: its plain values as one pickle, else each outcome pickled.
    Each item runs once: a fast loop until one raises, then one item at a time."""
    start = param["start"]
    star, apply = bool(param.get("star")), bool(param.get("apply"))
    values: list[Any] = []
    try:  # list.extend keeps what came before an item that raised
        if apply:
            values.extend(func(*args, **kwargs) for args, kwargs in items)
        elif star:
            values.extend(itertools.starmap(func, items))
        else:
            values.extend(map(func, items))
    except Exception as exc:
        ran = [(True, value, "") for value in values]
        ran.append((False, exc, _text_of(exc)))
        for item in items[len(ran):]:
            try:
                value = func(*item[0], **item[1]) if apply else func(*item) if star else func(item)
            except Exception as error:
                ran.append((False, error, _text_of(error)))
            else:
                ran.append((True, value, ""))
    else:
        plain = plain_values(values)
        if plain is not None:
            return pickle.dumps((param["call"], param["chunk"], start, plain))
        ran = [(True, value, "") for value in values]
    outcomes = [encode_outcome(start + j, ok, value, text) for j, (ok, value, text) in enumerate(ran)]
    return pickle.dumps((param["call"], param["chunk"], start, outcomes))


def _text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

class ChunkCallback(FuncCallback):
    """Runs chunks in a worker process; appends each record to this worker's results
    file before the loop acks the chunk (so a chunk acked has its results written).
    With the caller's socket (``engine``), a chunk comes with its items and goes to the
    function process with them (and with its call's function, once per process); its
    record goes back with its ack."""

    def __init__(self, rundir: str, name: str, max_tasks_per_worker: Optional[int],
                 engine: Optional[ChannelEngine] = None) -> None:
        super().__init__(functools.partial(run_chunk, rundir, channel=engine is not None),
                         max_tasks_per_worker=max_tasks_per_worker)
        self.keep_value = True
        self.engine = engine
        self.results_path = os.path.join(rundir, "results", name)

    def run(self, task: Task) -> Result:
        if self.engine is not None and task.delivery.handle.items is None:
            return Result(Outcome.OK)  # its call is over: nothing to run
        result, record = self.call(task)
        if result.ok and record is not None:
            if self.engine is not None:
                self.engine.keep_record(task.delivery, record[1])  # sent with the ack
            else:
                append_record(self.results_path, record)
        return result

    def wire_param(self, task: Task, process: FunctionProcess) -> Any:
        if self.engine is None:
            return task.param
        sent = task.delivery.handle
        call = sent.key[0]
        func = None if process.memo.get("call") == call else sent.function
        self.engine.started(task.delivery)
        return (task.param, func, sent.items)

    def replied(self, process: FunctionProcess, ok: bool, value: Any) -> None:
        if self.engine is not None:
            process.memo["call"] = value[0] if ok else None


def write_state(rundir: str, name: str, state: str, minion: str = "", error: str = "") -> None:
    """The worker's ``workers/<name>.json``: pid, host, state, and the name its leases
    carry in the queue (so the pool can put back at once what a lost worker held);
    ``error``: why it could not start (state ``failed``)."""
    info = {"name": name, "pid": os.getpid(), "host": socket.gethostname(), "state": state,
            "minion": minion, "time": time.time()}
    if error:
        info["error"] = error
    write_private(os.path.join(rundir, "workers", f"{name}.json"), json.dumps(info).encode())


def initialize(rundir: str, name: str) -> bool:
    """Run the pool's initializer (``calls/init``), if any, in this worker minion before
    its first chunk: the function processes it forks have what it set up. False (its
    state ``failed``, with the traceback) when it raised."""
    init = os.path.join("calls", "init")
    if not os.path.exists(os.path.join(rundir, init)):
        return True
    try:
        load_function(read_private(rundir, init))()
    except BaseException as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(text)
        write_state(rundir, name, "failed", error=text)
        return False
    return True


class StopSignal:
    """SIGTERM outside the minion's own handlers (before its run installs them, or once
    it has put this one back, while it ends its report): a stop asked, never a death,
    so that the worker gives back what it holds and its report ends."""

    def __init__(self) -> None:
        self.asked = False
        self._stop: Optional[Callable[[], None]] = None
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.asked = True
        if self._stop is not None:
            self._stop()

    def stops(self, stop: Callable[[], None]) -> None:
        """What a SIGTERM calls from now on (at once if one came already)."""
        self._stop = stop
        if self.asked:
            stop()


def _watch_parent(parent: int, stop: Any) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        stop()

    threading.Thread(target=watch, name="pool-parent-watch", daemon=True).start()


def main(argv: Optional[list[str]] = None) -> int:
    from ..minion.run import Minion
    from ..reporters.json import JsonReporter

    parser = argparse.ArgumentParser(prog="python -m minionize.pool.worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("rundir")
    parser.add_argument("--name", required=True)
    parser.add_argument("--parent", type=int, default=None, help="stop when this process is gone")
    args = parser.parse_args(argv)
    stop_signal = StopSignal()
    rundir = os.path.abspath(args.rundir)
    check_private(rundir)
    with open(os.path.join(rundir, "config.json")) as handle:
        config = json.load(handle)
    engine: Union[PoolEngine, ChannelEngine]
    if config.get("channel"):
        engine = ChannelEngine(os.path.join(rundir, "channel"), f"{args.name}.{os.getpid()}",
                               config["lease"])
        minion_id = engine.minion
    else:
        engine = PoolEngine(rundir, lease=config["lease"], max_attempts=config["max_attempts"],
                            tick=config["tick"])
        minion_id = engine.owner.minion
    if not initialize(rundir, args.name):
        return EXIT_INITIALIZER
    write_state(rundir, args.name, "alive", minion_id)
    callback = ChunkCallback(rundir, args.name, config.get("max_tasks_per_worker"),
                             engine if isinstance(engine, ChannelEngine) else None)
    # The job's labels (SLURM_JOB_ID, ...) but none of the user's MINION_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINION_")}
    settings = Settings.from_env(env, concurrency=1, max_attempts=config["max_attempts"],
                                 lease=config["lease"], grace_period=1.0)
    minion = Minion(callback, engine, JsonReporter(os.path.join(rundir, "report")), settings)
    # The loop's own stop flag (read only): an idle take ends as soon as it is set.
    engine.stopping = minion.stopping.asked.is_set
    stop_signal.stops(minion.stop)
    callback.prestart()  # before this minion's threads (and its first chunk)
    if args.parent is not None:
        _watch_parent(args.parent, minion.stop)
    try:
        code = minion.run()
    finally:
        # "finished" only when the pool let it go: a worker stopped by a signal (a
        # scancel, a preemption) before the pool closed is lost to the pool.
        closed = os.path.exists(os.path.join(rundir, "closed"))
        try:
            write_state(rundir, args.name, "finished" if closed else "stopped", minion_id)
        except OSError:
            pass  # the run directory is gone (terminate)
    return code


if __name__ == "__main__":
    sys.exit(main())
