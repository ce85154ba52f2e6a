"""The reaper kills every process that carries its minion's token when the minion goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from minionize.callbacks.reaper import TOKEN_VARIABLE, Reaper
from tests.services import wait_for


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


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
        wait_for(lambda: gone(grandchild), 10, "the setsid grandchild to be killed")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        if task.poll() is None:
            task.kill()
