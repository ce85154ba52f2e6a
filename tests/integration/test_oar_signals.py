"""What OAR 2.5 sends a job, measured: on ``oardel``, ``oardel -c``, the walltime with
and without ``--checkpoint``, and a besteffort job in the way of a normal one.

The measurements feed the table of docs/clusters.md: a job script that logs every signal
it can catch, and the test watching its process in /proc for the one it cannot
(SIGKILL: gone).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.integration.test_sge_signals import Watched, read_record, state
from tests.services import wait_for
from tests.services.oar import OarCluster, oar  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("oar")

RECORDER = """\
#!/bin/bash
log() { echo "$1 $(date +%s.%N)" >> "$OAR_WORKDIR/record.$OAR_JOB_ID"; }
for name in TERM USR1 USR2 INT HUP CONT XCPU URG; do trap "log $name" "$name"; done
log "pid=$$"
while :; do sleep 0.1; done
"""


def resubmissions(oar: OarCluster) -> dict[str, str]:  # noqa: F811
    """``{job: the job it resubmits}`` for the jobs oarstat lists."""
    found = {}
    for job in oar.jobs():
        match = re.search(r"resubmit_job_id = (\d+)", oar.details(job))
        if match and match.group(1) != "0":
            found[job] = match.group(1)
    return found


@pytest.fixture
def work(oar: OarCluster, tmp_path: Path) -> Iterator[Path]:  # noqa: F811
    yield tmp_path
    oar.delete_all()  # leave no job of this test behind for the next one


def submit_all(oar: OarCluster, work: Path, cases: Mapping[str, Sequence[str]]) -> dict[str, Watched]:  # noqa: F811
    recorder = work / "recorder.sh"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    jobs = {name: Watched(oar.oarsub([*options, str(recorder)], cwd=work)[0])
            for name, options in cases.items()}

    def started() -> bool:
        for watched in jobs.values():
            watched.pid = read_record(work / f"record.{watched.job}")[0]
        return all(w.pid for w in jobs.values())

    wait_for(started, 90, "the recorder jobs to start", every=0.2)
    return jobs


def watch(work: Path, jobs: Mapping[str, Watched], begun: float, seconds: float,
          until_gone: Sequence[str]) -> None:
    """Follow the jobs' processes until those of ``until_gone`` are gone; print what
    each caught and when it went."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for watched in jobs.values():
            if watched.gone is None and state(watched.pid) == "gone":
                watched.gone = time.time()
        if all(jobs[name].gone for name in until_gone):
            break
        time.sleep(0.05)
    for name, watched in jobs.items():
        watched.caught = read_record(work / f"record.{watched.job}")[1]
        caught = ", ".join(f"{n} at {t - begun:+.1f}s" for n, t in watched.caught) or "nothing"
        ended = f"gone at {watched.gone - begun:+.1f}s" if watched.gone else "running"
        print(f"{name}: caught {caught}; {ended}")


def test_what_oar_sends(oar: OarCluster, work: Path) -> None:  # noqa: F811
    cases = {
        "oardel": ["-t", "idempotent", "-l", "core=1,walltime=0:05:00"],
        "oardel -c": ["-l", "core=1,walltime=0:05:00"],
        "walltime --checkpoint": ["-l", "core=1,walltime=0:0:30", "--checkpoint", "20",
                                  "--signal", "15"],
        "walltime": ["-l", "core=1,walltime=0:0:15"],
    }
    jobs = submit_all(oar, work, cases)
    begun = time.time()
    oar.run(["oardel", jobs["oardel"].job])
    oar.run(["oardel", "-c", jobs["oardel -c"].job])
    watch(work, jobs, begun, 90, ["oardel", "walltime --checkpoint", "walltime"])

    # oardel: SIGKILL at once, nothing to catch before it; an idempotent job deleted is
    # not resubmitted.
    deleted = jobs["oardel"]
    assert deleted.caught == [] and deleted.gone is not None and deleted.gone - begun < 30
    assert resubmissions(oar) == {}
    # oardel -c: the checkpoint signal, SIGUSR2 by default; the job goes on.
    checkpointed = jobs["oardel -c"]
    assert [n for n, _ in checkpointed.caught] == ["USR2"], checkpointed
    assert checkpointed.gone is None
    # The walltime: SIGKILL, nothing before it; with --checkpoint 20 --signal 15,
    # SIGTERM from 20 s before, at each of OAR's walltime checks (every 10 s or so),
    # then SIGKILL.
    walltime = jobs["walltime"]
    assert walltime.caught == [] and walltime.gone is not None
    warned = jobs["walltime --checkpoint"]
    assert {n for n, _ in warned.caught} == {"TERM"}, warned
    assert warned.gone is not None and warned.gone - warned.caught[0][1] > 3


def test_what_oar_sends_a_besteffort_job_in_the_way(oar: OarCluster, work: Path) -> None:  # noqa: F811
    cases = {
        "besteffort": ["-t", "besteffort", "-t", "idempotent", "-l", "core=1,walltime=0:05:00"],
        "besteffort --checkpoint": ["-t", "besteffort", "-l", "core=1,walltime=0:05:00",
                                    "--checkpoint", "5", "--signal", "15"],
    }
    jobs = submit_all(oar, work, cases)
    begun = time.time()
    oar.oarsub(["-l", "core=4,walltime=0:05:00", "true"], cwd=work)
    watch(work, jobs, begun, 90, list(cases))

    # Without --checkpoint: SIGKILL at the scheduler's next pass; OAR resubmits the
    # idempotent job it killed (after a few seconds of running only).
    killed = jobs["besteffort"]
    assert killed.caught == [] and killed.gone is not None
    wait_for(lambda: killed.job in resubmissions(oar).values(), 60, "the resubmission")
    # With --checkpoint 5 --signal 15: SIGTERM, then SIGKILL once the 5 s have passed.
    warned = jobs["besteffort --checkpoint"]
    assert {n for n, _ in warned.caught} == {"TERM"}, warned
    assert warned.gone is not None and warned.gone - warned.caught[0][1] > 3
