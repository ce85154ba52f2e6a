"""What Grid Engine sends a job, measured, and a suspended minion that holds the queue
lock (``qmod -sj``: SIGSTOP) does not stop the others.

The measurements feed the table of docs/clusters.md: a job script that logs every signal
it can catch, and the test watching its process in /proc for the ones it cannot
(SIGSTOP: state ``T``; SIGKILL: gone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from tests.integration.test_sge_array import Sweep, sweep  # noqa: F401 - fixtures
from tests.integration.test_slurm_array import assert_all_done, wait_running
from tests.integration.test_sweep_attacks import holds_flock
from tests.services import wait_for
from tests.services.sge import NOTIFY_SECONDS, SgeCluster, sge  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("sge")

RECORDER = """\
#!/bin/bash
log() { echo "$1 $(date +%s.%N)" >> "$RECORD.$JOB_ID"; }
for name in TERM USR1 USR2 INT HUP CONT XCPU; do trap "log $name" "$name"; done
log "pid=$$"
while :; do sleep 0.1; done
"""


@dataclass
class Watched:
    """One recorder job: what it caught, when it stopped (state T) and when it was gone."""

    job: str
    pid: int = 0
    caught: list[tuple[str, float]] = field(default_factory=list)
    stopped: Optional[float] = None
    gone: Optional[float] = None


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def read_record(path: Path) -> tuple[int, list[tuple[str, float]]]:
    pid, caught = 0, []
    if path.exists():
        for line in path.read_text().splitlines():
            name, stamp = line.split()
            if name.startswith("pid="):
                pid = int(name[4:])
            else:
                caught.append((name, float(stamp)))
    return pid, caught


def test_what_grid_engine_sends(sge: SgeCluster, tmp_path: Path) -> None:  # noqa: F811
    recorder = tmp_path / "recorder.sh"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    env = {"RECORD": str(tmp_path / "record")}
    base = ["-S", "/bin/bash", "-V", "-o", "/dev/null", "-j", "y"]
    cases = {
        "qdel": [],
        "qdel -notify": ["-notify"],
        "qmod -sj": [],
        "qmod -sj -notify": ["-notify"],
        "h_rt": ["-l", "h_rt=0:0:3"],
        "h_rt -notify": ["-notify", "-l", "h_rt=0:0:3"],
    }
    jobs = {name: Watched(sge.qsub(recorder, options=[*base, *extra], env=env))
            for name, extra in cases.items()}

    def started() -> bool:
        for watched in jobs.values():
            watched.pid = read_record(tmp_path / f"record.{watched.job}")[0]
        return all(w.pid for w in jobs.values())

    wait_for(started, 30, "the recorder jobs to start")
    begun = time.time()
    sge.run(["qdel", jobs["qdel"].job, jobs["qdel -notify"].job])
    sge.run(["qmod", "-sj", jobs["qmod -sj"].job, jobs["qmod -sj -notify"].job])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = time.time()
        for watched in jobs.values():
            current = state(watched.pid)
            if current == "T" and watched.stopped is None:
                watched.stopped = now
            if current == "gone" and watched.gone is None:
                watched.gone = now
        if all(w.gone or w.stopped for w in jobs.values()):
            break
        time.sleep(0.05)
    for watched in jobs.values():
        watched.caught = read_record(tmp_path / f"record.{watched.job}")[1]
        caught = ", ".join(f"{n} at {t - begun:+.1f}s" for n, t in watched.caught) or "nothing"
        ended = (f"stopped at {watched.stopped - begun:+.1f}s" if watched.stopped
                 else f"gone at {watched.gone - begun:+.1f}s" if watched.gone else "running")
        print(f"{next(k for k, v in jobs.items() if v is watched)}: caught {caught}; {ended}")

    # qdel: SIGKILL at once, nothing to catch before it.
    plain = jobs["qdel"]
    assert plain.caught == [] and plain.gone is not None and plain.gone - begun < 5
    # qdel of a -notify job: SIGUSR2 at once, SIGKILL the notify time later.
    notified = jobs["qdel -notify"]
    assert [n for n, _ in notified.caught] == ["USR2"], notified
    assert notified.caught[0][1] - begun < 3
    assert notified.gone is not None and notified.gone - begun > NOTIFY_SECONDS - 1
    # qmod -sj: SIGSTOP at once.
    stopped = jobs["qmod -sj"]
    assert stopped.caught == [] and stopped.stopped is not None and stopped.stopped - begun < 3
    # qmod -sj of a -notify job: SIGUSR1 at once, SIGSTOP the notify time later.
    suspended = jobs["qmod -sj -notify"]
    assert [n for n, _ in suspended.caught] == ["USR1"], suspended
    assert suspended.stopped is not None and suspended.stopped - begun > NOTIFY_SECONDS - 1
    # h_rt: SIGKILL (after SIGUSR2 and the notify time with -notify).
    assert jobs["h_rt"].caught == [] and jobs["h_rt"].gone is not None
    assert [n for n, _ in jobs["h_rt -notify"].caught] == ["USR2"]
    warned, killed = jobs["h_rt -notify"].caught[0][1], jobs["h_rt -notify"].gone
    assert killed is not None and killed - warned > NOTIFY_SECONDS - 1


def minion_pid(job: str) -> int:
    """The pid of the minionize process of Grid Engine job ``job``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"JOB_ID={job}".encode() in environ and b"minionize" in command:
            return int(entry.name)
    raise AssertionError(f"no minionize process in job {job}")


def test_a_suspended_minion_job_does_not_stop_the_queue(sweep: Sweep) -> None:  # noqa: F811
    count = 300
    sweep.fill(count)
    settings = {"MINION_LEASE": "4", "MINION_SWEEP_LOCK_LEASE": "2", "MINION_WAIT": "1",
                "MINION_CONCURRENCY": "1"}
    # The first job holds the queue lock 0.2 s in every session (a test setting), so
    # that a suspension catches it holding the lock.
    first = sweep.submit("-t", "1", **settings, MINION_SWEEP_TEST_HOLD_LOCK="0.2")
    wait_running(sweep, "1")
    pid = minion_pid(first)
    lock = sweep.dir / "sweeps" / "queue.lock"
    tries, caught = 0, False
    while tries < 10:  # suspend it until it is caught holding the queue lock
        tries += 1
        # -notify: SIGUSR1 (ignored), then SIGSTOP the notify time later.
        sweep.cluster.run(["qmod", "-sj", first])
        wait_for(lambda: state(pid) == "T", 20, "the suspended minion to stop")
        if holds_flock(pid, lock):
            caught = True
            break
        sweep.cluster.run(["qmod", "-usj", first])
        wait_for(lambda: state(pid) != "T", 20, "the minion to resume")
    print(f"suspended {tries} times; caught holding the queue lock: {caught}")
    assert caught
    second = sweep.submit("-t", "2", **settings)
    sweep.wait_finished(second, 120)  # it drained the queue while the first was suspended
    assert sweep.cluster.jobs(first).get(f"{first}.1") == "s"
    assert state(pid) == "T"
    sweep.cluster.run(["qmod", "-usj", first])
    sweep.wait_finished(first, 60)
    assert_all_done(sweep, count)
