"""The reaper kills every process that carries its minion's token when the minion goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from minionize.callbacks.process.reaper import TOKEN_VARIABLE, Reaper
from tests.services import alive, wait_for


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
def test_closing_the_pipe_kills_the_tasks_even_a_setsid_grandchild(tmp_path: object) -> None:
    reaper = Reaper()
    reaper.start()
    assert reaper.pid is not None
    env = {**os.environ, TOKEN_VARIABLE: reaper.token}
    task = subprocess.Popen(
        ["sh", "-c", "setsid sleep 60 & echo $!; sleep 60"], env=env,
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    other = subprocess.Popen(["sleep", "60"])  # not a task: it must survive
    try:
        assert task.stdout is not None
        grandchild = int(task.stdout.readline())
        reaper.stop()  # what the kernel does when the minion dies
        task.wait(10)
        assert task.returncode == -signal.SIGKILL
        wait_for(lambda: not alive(grandchild), 10, "the setsid grandchild to be killed")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        if task.poll() is None:
            task.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")
def test_a_fork_of_the_minion_that_forgot_the_reaper_does_not_keep_it_asleep() -> None:
    """A function's worker is a fork of the minion: it must not hold the reaper's pipe
    open, or the reaper would sleep on after the minion died."""
    reaper = Reaper()
    reaper.start()
    fork = os.fork()
    if fork == 0:  # a worker, alive longer than the minion
        try:
            reaper.forget_after_fork()
            time.sleep(30)
        finally:
            os._exit(0)
    task = subprocess.Popen(["sleep", "60"], env={**os.environ, TOKEN_VARIABLE: reaper.token},
                            start_new_session=True)
    try:
        closer = threading.Thread(target=reaper.stop, daemon=True)
        closer.start()  # what the kernel does when the minion dies
        wait_for(lambda: task.poll() is not None, 10, "the task to be killed")
        closer.join(10)
        assert not closer.is_alive()
    finally:
        os.kill(fork, signal.SIGKILL)
        os.waitpid(fork, 0)
        if task.poll() is None:
            task.kill()
