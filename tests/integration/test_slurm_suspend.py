"""``scontrol suspend`` of a minion job on a real single-node SLURM: the other job drains
the sweep queue, even when the suspended minion held the queue lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_slurm_array import (  # noqa: F401 - fixtures
    Sweep,
    assert_all_done,
    sweep,
    wait_running,
)
from tests.integration.test_sweep_attacks import holds_flock
from tests.services import wait_for

pytestmark = pytest.mark.service("slurm")


def minion_pid(array_job: str) -> int:
    """The pid of the minionize process of SLURM array job ``array_job``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SLURM_ARRAY_JOB_ID={array_job}".encode() in environ and b"minionize" in command:
            return int(entry.name)
    raise AssertionError(f"no minionize process in job {array_job}")


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_suspended_minion_job_does_not_stop_the_queue(sweep: Sweep) -> None:  # noqa: F811
    count = 300
    sweep.fill(count)
    settings = {"MINION_LEASE": "4", "MINION_SWEEP_LOCK_LEASE": "2", "MINION_WAIT": "1",
                "MINION_CONCURRENCY": "1"}
    # The first job holds the queue lock 50 ms in every session (a test setting), so
    # that a suspension catches it holding the lock.
    first = sweep.submit("--array=0", **settings, MINION_SWEEP_TEST_HOLD_LOCK="0.05")
    wait_running(sweep, "0")
    pid = minion_pid(first)
    lock = sweep.dir / "sweeps" / "queue.lock"
    label = f"{first}_0"
    tries, caught = 0, False
    while tries < 20:  # suspend it until it is caught holding the queue lock
        tries += 1
        sweep.slurm.run(["scontrol", "suspend", label])
        wait_for(lambda: state(pid) == "T", 20, "the suspended minion to stop")
        if holds_flock(pid, lock):
            caught = True
            break
        sweep.slurm.run(["scontrol", "resume", label])
        wait_for(lambda: state(pid) != "T", 20, "the minion to resume")
    print(f"suspended {tries} times; caught holding the queue lock: {caught}")
    assert caught
    second = sweep.submit("--array=1", **settings)
    sweep.wait_finished(second, 120)  # it drained the queue while the first was suspended
    assert sweep.slurm.jobs(first).get(label) == "SUSPENDED"
    assert state(pid) == "T"
    sweep.slurm.run(["scontrol", "resume", label])
    sweep.wait_finished(first, 60)
    assert_all_done(sweep, count)
