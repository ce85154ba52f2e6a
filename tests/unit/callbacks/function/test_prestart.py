"""FuncCallback.prestart: a function process forked ahead (a pool worker's, before its
minion's threads), kept for the first param; and the hooks a subclass adds to the wire."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from minionize import FuncCallback
from minionize.callbacks.function.wire import FunctionProcess
from minionize.config import Settings
from minionize.minion.run import Minion
from minionize.testing import MemoryEngine


def pid_of(_: Any) -> int:
    return os.getpid()


MARKS = ""


def mark_pid(_: Any) -> None:
    with open(MARKS, "a") as handle:
        handle.write(f"{os.getpid()}\n")


class Remembering(FuncCallback):
    """Sends the param doubled, and counts in each process's memo what it sent."""

    def __init__(self) -> None:
        super().__init__(pid_of)
        self.keep_value = True
        self.replies: list[tuple[bool, Any]] = []

    def wire_param(self, task: Any, process: FunctionProcess) -> Any:
        process.memo["sent"] = process.memo.get("sent", 0) + 1
        return task.param * 2

    def replied(self, process: FunctionProcess, ok: bool, value: Any) -> None:
        self.replies.append((ok, process.memo["sent"]))


def test_the_first_param_runs_in_the_process_forked_ahead(tmp_path: Path) -> None:
    global MARKS
    MARKS = str(tmp_path / "pids")
    callback = FuncCallback(mark_pid)
    callback.prestart()
    try:
        (pid,) = callback.worker_pids()
        callback.prestart()  # once: it has one already
        assert callback.worker_pids() == [pid]
        code = Minion(callback, MemoryEngine([1, 2]), settings=Settings.from_env({})).run()
        assert code == 0
    finally:
        callback.teardown()
    assert callback.worker_pids() == []
    assert (tmp_path / "pids").read_text().split() == [str(pid), str(pid)]


def test_a_thread_callback_forks_nothing() -> None:
    callback = FuncCallback(pid_of, mode="thread")
    callback.prestart()
    assert callback.worker_pids() == []


def test_a_subclass_chooses_what_crosses_the_wire() -> None:
    callback = Remembering()
    code = Minion(callback, MemoryEngine([1, 2, 3]), settings=Settings.from_env({})).run()
    assert code == 0
    assert callback.replies == [(True, 1), (True, 2), (True, 3)]  # one process, three sends
