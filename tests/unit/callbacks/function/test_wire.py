"""A function worker's replies: each one is its own request's, from the worker itself;
garbage or a dead worker is a failed attempt, never a wait without end."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from typing import Any

from minionize import FuncCallback
from minionize.config import Settings
from minionize.minion.run import Minion
from minionize.testing import MemoryEngine


def run(func: Any, params: list[Any]) -> MemoryEngine:
    engine = MemoryEngine(params)
    Minion(FuncCallback(func), engine=engine, settings=Settings.from_env({}, max_attempts=1)).run()
    return engine


def sockets() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                found.append(int(name))
        except OSError:
            continue
    return found


def test_garbage_on_the_workers_pipe_fails_that_attempt_and_the_next_param_runs() -> None:
    def scribble(param: int) -> int:
        if param == 1:
            for fd in sockets():  # the worker's end of its pipe among them
                try:
                    os.write(fd, b"\xffgarbage that is no reply at all\n")
                except OSError:
                    pass  # another socket, whose other end is closed: not the pipe
        return param * 10

    started = time.monotonic()
    engine = run(scribble, [0, 1, 2])
    assert time.monotonic() - started < 20
    assert sorted(engine.done) == [0, 2]
    [(param, reason)] = engine.dead
    assert param == 1 and "not a reply" in reason
    assert [(row["param"], row["result"]) for row in engine.results()] == [(0, 0), (2, 20)]


def test_a_worker_that_dies_while_its_forked_child_holds_the_pipe_is_a_lost_attempt() -> None:
    def die(param: int) -> int:
        if param == 1:
            if os.fork() == 0:
                time.sleep(30)  # holds the worker's pipe, never answers
                os._exit(0)
            os._exit(3)
        return param

    started = time.monotonic()
    engine = run(die, [0, 1, 2])
    assert time.monotonic() - started < 15  # not the 30 s of the child
    assert sorted(engine.done) == [0, 2]
    [(param, reason)] = engine.dead
    assert param == 1 and "exit code 3" in reason


def square(x: int) -> int:
    return x * x


def test_a_function_using_a_multiprocessing_pool_is_not_a_forking_failure() -> None:
    def fan_out(param: int) -> list[int]:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return pool.map(square, range(param))

    engine = run(fan_out, [2, 3])
    assert engine.dead == []
    assert [row["result"] for row in engine.results()] == [[0, 1], [0, 1, 4]]


def test_a_worker_is_still_reused_when_the_function_does_not_fork() -> None:
    engine = run(lambda param: os.getpid(), [0, 1, 2])
    assert len({row["result"] for row in engine.results()}) == 1
