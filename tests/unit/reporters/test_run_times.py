"""The queue's record of run times: the task lines of the reports of one queue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from minionize.identity import MinionInfo
from minionize.reporters import run_times
from minionize.reporters.base import TaskReport
from minionize.reporters.json import JsonReporter
from minionize.reporters.queue_ref import queue_ref
from minionize.reporters.run_times import recent_run_times

SWEEPS = {"EXECO_PERSISTENCE_DIR": "/q/sweeps"}
OTHER = {"EXECO_PERSISTENCE_DIR": "/q/other"}


def write_report(directory: Path, pid: int, values: dict[str, str],
                 runs: list[tuple[str, float, float]]) -> JsonReporter:
    """A minion of the sweep queue of ``values`` that settled ``runs`` (outcome, start,
    duration)."""
    reporter = JsonReporter(directory, queue=("sweep", values))
    reporter.start(MinionInfo(minion_id=str(pid), host="node", pid=pid, start=time.time(),
                              engine="sweep"))
    for n, (outcome, start, duration) in enumerate(runs):
        reporter.task_finished(TaskReport(param=n, param_id=str(n), attempt=1, outcome=outcome,
                                          start=start, duration=duration))
    return reporter


def test_it_gives_the_most_recent_runs_of_this_queue_oldest_first(tmp_path: Path) -> None:
    write_report(tmp_path, 1, SWEEPS, [("done", 100.0, 4.0), ("retry", 110.0, 6.0),
                                      ("released", 120.0, 0.5), ("done", 130.0, 5.0)])
    write_report(tmp_path, 2, SWEEPS, [("dead", 105.0, 7.0), ("done", 140.0, 3.0)])
    write_report(tmp_path, 3, OTHER, [("done", 150.0, 99.0)])  # another queue's
    (tmp_path / "notes.jsonl").write_text('{"ev": "task", "outcome": "done"}\n')
    queue = queue_ref("sweep", SWEEPS)
    # A param given back (released) did not run to its end; the other queue says nothing.
    assert recent_run_times(tmp_path, queue, 10) == [4.0, 7.0, 6.0, 5.0, 3.0]
    assert recent_run_times(tmp_path, queue, 2) == [5.0, 3.0]
    assert recent_run_times(tmp_path / "missing", queue, 10) == []


def test_a_long_report_is_read_from_its_end_only(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(tmp_path, 1, SWEEPS, [("done", 100.0 + n, 1.0) for n in range(500)]
                 + [("done", 1000.0, 2.0)])
    monkeypatch.setattr(run_times, "TAIL_BYTES", 2000)  # a few lines, the first one cut
    found = recent_run_times(tmp_path, queue_ref("sweep", SWEEPS), 50)
    assert 0 < len(found) < 20 and found[-1] == 2.0


def test_a_torn_line_and_bytes_that_are_not_utf8_are_skipped(tmp_path: Path) -> None:
    reporter = write_report(tmp_path, 1, SWEEPS, [("done", 100.0, 4.0)])
    assert reporter.path is not None
    with open(reporter.path, "ab") as report:
        report.write(b'\xff\xfe{"ev": "task"\n{"ev": "task", "outcome": "done", "start": 2')
    assert recent_run_times(tmp_path, queue_ref("sweep", SWEEPS), 10) == [4.0]
