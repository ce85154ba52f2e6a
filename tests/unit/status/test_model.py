"""The status model: right answers from summaries, torn lines, corrupt files and no files."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from minionize.callbacks.base import Task
from minionize.engines.base import Delivery
from minionize.errors import UnsupportedOperation
from minionize.reporters.base import MinionInfo, TaskReport
from minionize.reporters.json import JsonReporter
from minionize.status import query_queue, read_status
from minionize.status.model import KEEP


def minion(directory: Path, pid: int, heartbeat: float = 5.0, **jobs: str) -> JsonReporter:
    reporter = JsonReporter(directory, heartbeat=heartbeat)
    reporter.start(MinionInfo(minion_id=str(pid), host="node", pid=pid, start=time.time(),
                              jobs=dict(jobs)))
    return reporter


def finish(reporter: JsonReporter, param: Any, outcome: str = "done", start: float | None = None,
           duration: float = 0.01, attempt: int = 1, **extra: Any) -> None:
    start = time.time() - duration if start is None else start
    reporter.task_finished(TaskReport(param=param, param_id=str(param), attempt=attempt,
                                      outcome=outcome, start=start, duration=duration, **extra))


def test_missing_directory_says_so(tmp_path: Path) -> None:
    status = read_status(tmp_path / "nowhere")
    assert not status.exists and status.empty
    out = status.to_json()
    assert (out["done"], out["failed"], out["dead"], out["running"], out["minions"]) == (
        0, 0, 0, 0, [])
    assert out["rate"] == {"recent": None, "overall": None} and out["eta"] is None


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "unrelated.txt").write_text("hello")
    status = read_status(tmp_path)
    assert status.exists and status.empty and status.warnings == []


def test_sub_second_run_gives_its_true_rate(tmp_path: Path) -> None:
    # 589 params in 1.0 s exactly: the old status printed "1000.0 per second" for this.
    reporter = minion(tmp_path, 1)
    t0 = time.time() - 10
    for i in range(589):
        finish(reporter, i, start=t0 + i / 589, duration=1 / 589)
    reporter.stop(0)
    status = read_status(tmp_path)
    assert status.done == 589
    assert status.rate_overall == pytest.approx(589.0)
    assert status.rate_recent is None  # nobody is running: no "current" rate to invent
    assert status.to_json()["elapsed"] == pytest.approx(1.0)

    tiny = tmp_path / "tiny"
    reporter = minion(tiny, 2)
    finish(reporter, "only", duration=0.002)
    reporter.stop(0)
    one = read_status(tiny)
    assert one.done == 1 and one.rate_overall == pytest.approx(500.0, rel=1e-3)


def test_nothing_finished_yet_has_no_rate(tmp_path: Path) -> None:
    minion(tmp_path, 1)
    status = read_status(tmp_path)
    assert status.count("alive") == 1
    assert status.rate_overall is None and status.rate_recent is None


def test_recent_rate_counts_the_last_minute_only(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1)
    now = time.time()
    for i in range(100):  # two minutes ago: outside the window
        finish(reporter, f"old{i}", start=now - 120, duration=0.1)
    for i in range(60):
        finish(reporter, f"new{i}", start=now - 30 + i * 0.5, duration=0.01)
    status = read_status(tmp_path, now=now)
    assert status.rate_recent == pytest.approx(60 / 60, rel=0.05)
    assert status.rate_overall == pytest.approx(160 / 120.1, rel=0.01)


def test_torn_last_line_is_ignored_and_corrupt_lines_are_reported(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1, heartbeat=3600)
    for i in range(5):
        finish(reporter, i)
    assert reporter.path is not None and reporter.summary_path is not None
    with open(reporter.path, "ab") as handle:  # killed mid-write
        handle.write(b'{"ev":"task","t":1,"id":"9","param":9,"outcome":"do')
    status = read_status(tmp_path)
    assert status.done == 5 and status.warnings == []

    # A corrupt line in the middle (disk full, a stray editor) costs that line only.
    with open(reporter.path, "ab") as handle:
        handle.write(b'\n\x00\x00garbage\n[1, 2]\n')
    finish(reporter, "after")
    status = read_status(tmp_path)
    assert status.done == 6
    assert any("skipped 3 unreadable line(s)" in w for w in status.warnings)


def test_summary_plus_the_lines_after_it_count_each_task_once(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1, heartbeat=0.0)
    for i in range(10):
        finish(reporter, i)
    reporter.heartbeat([])  # summary: 10 done
    for i in range(10, 13):
        finish(reporter, i, "retry" if i == 12 else "done")
    status = read_status(tmp_path)
    assert (status.done, status.failed, status.dead) == (12, 1, 0)


def test_corrupt_or_stale_summary_falls_back_to_the_report(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1, heartbeat=0.0)
    for i in range(7):
        finish(reporter, i)
    reporter.stop(0)
    assert reporter.summary_path is not None and reporter.path is not None
    reporter.summary_path.write_text('{"version": 1, "minion": ')
    status = read_status(tmp_path)
    assert status.done == 7 and status.count("finished") == 1
    assert any("unreadable" in w for w in status.warnings)

    reporter.summary_path.write_text(json.dumps({"version": 1, "offset": 10**9, "minion": {},
                                                 "counts": {}, "busy": {}}))
    assert read_status(tmp_path).done == 7

    reporter.path.unlink()  # only the summary left: still counted
    reporter.summary_path.write_text(json.dumps({
        "version": 1, "offset": 0, "minion": {"host": "h", "pid": 3}, "counts": {"done": 4},
        "busy": {}, "stopped": {"t": 1.0, "exit_code": 0}}))
    status = read_status(tmp_path)
    assert status.done == 4 and status.minions[0].host == "h"


def test_alive_finished_and_lost(tmp_path: Path) -> None:
    alive = minion(tmp_path, 1, heartbeat=10.0)
    finished = minion(tmp_path, 2, heartbeat=1.0)
    finished.stop(0)
    lost = minion(tmp_path, 3, heartbeat=0.0, SLURM_ARRAY_JOB_ID="1234", SLURM_ARRAY_TASK_ID="5")
    lost.heartbeat([Task(Delivery("stuck", "stuck"))])
    now = time.time()
    states = {m.pid: m.state for m in read_status(tmp_path, now=now).minions}
    assert states == {1: "alive", 2: "finished", 3: "alive"}
    # No sign of life for more than 3 heartbeat periods (at least the loop's 2 s) + 5 s.
    assert {m.pid: m.state for m in read_status(tmp_path, now=now + 11.5).minions} == {
        1: "alive", 2: "finished", 3: "lost"}
    later = read_status(tmp_path, now=now + 3 * 10.0 + 5.5)
    states = {m.pid: m.state for m in later.minions}
    assert states == {1: "lost", 2: "finished", 3: "lost"}
    assert later.running == 0 and later.stranded == 1
    by_pid = {m.pid: m for m in later.minions}
    assert by_pid[3].job == "1234_5" and by_pid[3].running[0]["param"] == "stuck"
    # An explicit threshold wins.
    assert read_status(tmp_path, now=now + 2, lost_after=1).count("lost") == 2
    alive.stop(0)
    lost.stop(0)


def test_eta_from_the_queue_counters(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1)
    now = time.time()
    for i in range(120):
        finish(reporter, i, start=now - 60 + i * 0.5, duration=0.01)
    status = read_status(tmp_path, now=now, queue={"todo": 100, "in_flight": 2, "done": 120,
                                                   "dead": 0, "total": 222})
    assert status.rate_recent == pytest.approx(2.0, rel=0.05)
    assert status.remaining == 102
    assert status.eta == pytest.approx(51.0, rel=0.05)
    assert status.progress == (120, 222)
    reporter.stop(0)
    # Nobody alive: no ETA to promise, but the remaining count still shows.
    stopped = read_status(tmp_path, queue={"todo": 100, "in_flight": 0})
    assert stopped.remaining == 100 and stopped.eta is None
    assert read_status(tmp_path, queue={"todo": 0, "in_flight": 0}).eta == 0.0


def test_errors_and_slowest(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1)
    for attempt in (1, 2, 3):
        finish(reporter, "bad", "retry" if attempt < 3 else "dead", attempt=attempt, exit_code=3,
               reason="exit code 3", stderr_tail=f"Traceback\nattempt {attempt} failed\n",
               stderr_path=f"logs/bad.{attempt}.err")
    finish(reporter, "worse", "retry", exit_code=1)
    for i, duration in enumerate((0.1, 9.0, 3.0, 0.2)):
        finish(reporter, f"t{i}", duration=duration)
    status = read_status(tmp_path)
    assert (status.failed, status.dead) == (4, 1)
    # The newest failure of each param, newest first.
    assert [(e["param"], e["attempt"]) for e in status.errors] == [("worse", 1), ("bad", 3)]
    bad = status.errors[1]
    assert bad["stderr_tail"].endswith("attempt 3 failed\n")
    assert bad["stderr_path"] == os.path.abspath("logs/bad.3.err") and bad["minion"] == "node_1"
    assert [s["param"] for s in status.slowest[:2]] == ["t1", "t2"]


def test_throughput_bars(tmp_path: Path) -> None:
    reporter = minion(tmp_path, 1)
    now = 1_000_000.0
    for i in range(30):
        finish(reporter, i, start=now - 25 + i * 0.1, duration=0.0)
    status = read_status(tmp_path, now=now)
    assert sum(status.throughput) == 30 and len(status.throughput) == 30


class FakeEngine:
    name = "fake"

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def status(self) -> dict[str, Any]:
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer == "hang":
            time.sleep(5)
        return dict(self.answer)

    def describe(self) -> str:
        return "fake queue"


@pytest.mark.parametrize(
    ("answer", "counters", "note"),
    [
        ({"todo": 3, "in_flight": 1}, {"todo": 3, "in_flight": 1}, "fake queue"),
        (UnsupportedOperation("the fake engine cannot report its status"), None,
         "queue size unknown: the fake engine cannot report its status"),
        (RuntimeError("connection refused"), None, "queue size unknown: connection refused"),
        ("hang", None, "queue size unknown: the queue did not answer within 0.2 s"),
    ],
)
def test_query_queue_never_fails(monkeypatch: pytest.MonkeyPatch, answer: Any,
                                 counters: Any, note: str) -> None:
    import minionize.engines

    monkeypatch.setenv("MINION_ENGINE", "fake")
    monkeypatch.setattr(minionize.engines, "load_engine", lambda settings: FakeEngine(answer))
    assert query_queue(timeout=0.2) == (counters, note)


def test_query_queue_with_a_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINION_ENGINE", "no-such-engine")
    counters, note = query_queue()
    assert counters is None and "MINION_ENGINE='no-such-engine'" in note


def test_query_queue_never_creates_a_sweep_queue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINION_ENGINE", raising=False)
    monkeypatch.delenv("EXECO_PERSISTENCE_DIR", raising=False)
    assert query_queue() == (None, "queue size unknown: no sweep queue in sweeps")
    assert list(tmp_path.iterdir()) == []


def test_many_minions_read_fast(tmp_path: Path) -> None:
    # Not a benchmark (see bench/bench_status.py): a guard against replaying whole files.
    for pid in range(20):
        reporter = minion(tmp_path, pid)
        for i in range(500):
            finish(reporter, i)
        reporter.stop(0)
    start = time.perf_counter()
    status = read_status(tmp_path)
    assert status.done == 10_000 and len(status.minions) == 20
    assert time.perf_counter() - start < 0.5
    assert len(status.slowest) == KEEP


def test_short_tasks_between_heartbeats_count_as_running(tmp_path: Path) -> None:
    # Tasks that start and end between two heartbeats never appear in one; the task lines
    # say how many still run, so "running now" is right without a line per start.
    reporter = minion(tmp_path, 1, heartbeat=3600)
    tasks = [Task(Delivery(f"p{i}", f"p{i}")) for i in range(3)]
    for task in tasks:
        reporter.task_started(task)
    finish(reporter, "p0")
    status = read_status(tmp_path)
    assert status.running == 2 and status.minions[0].in_progress == 2
    finish(reporter, "p1")
    finish(reporter, "p2")
    assert read_status(tmp_path).running == 0
    reporter.stop(0)


def test_a_file_that_is_not_a_report_is_skipped_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 11 item 7: any .jsonl was read as a minion, lost "20785 d 13 h ago".
    reporter = minion(tmp_path, 1)
    finish(reporter, "a")
    reporter.stop(0)
    (tmp_path / "notes.jsonl").write_text('{"x": 1}\n{"y": 2}\n')
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "torn.jsonl").write_bytes(b'{"ev":"start","t":1,"minion":{"host":"torn"')
    with caplog.at_level("WARNING", logger="minionize.status"):
        first = read_status(tmp_path)
        second = read_status(tmp_path)
    assert sorted(m.name for m in first.minions) == sorted(m.name for m in second.minions)
    assert {m.name for m in first.minions} == {reporter.path.stem, "torn"}  # type: ignore[union-attr]
    assert [m.state for m in first.minions if m.name != "torn"] == ["finished"]
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2 and all("not a minion report" in m for m in skipped)
    assert any("notes.jsonl" in m for m in skipped) and any("empty.jsonl" in m for m in skipped)


# Issue 20 item 15: a damaged report (a huge number, deep nesting) is one warning naming
# its file, never a traceback, in minion-status's text, its --json and mtop.
HUGE = "9" * 400  # a float cannot hold it: OverflowError
TOO_LONG = "9" * 5000  # past Python's int conversion limit: ValueError
DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError
NESTED = "[" * 900 + "]" * 900  # JSON reads it; printing it may not


def fill(text: str) -> str:
    """``text`` with <HUGE>, <TOO_LONG>, <DEEP> and <NESTED> replaced."""
    for name, value in (("HUGE", HUGE), ("TOO_LONG", TOO_LONG), ("DEEP", DEEP), ("NESTED", NESTED)):
        text = text.replace(f"<{name}>", value)
    return text


def _show(status: Any) -> None:
    """What minion-status and mtop do with a Status: none of it may raise."""
    from rich.console import Console

    from minionize.status.text import format_status
    from minionize.status.tui import render

    format_status(status)
    json.dumps(status.to_json(), default=repr)
    Console(file=io.StringIO(), width=120).print(render(status, max_rows=20))


SUMMARY_DAMAGE = [
    fill('"counts": {"done": <HUGE>}'),
    fill('"counts": {"done": <TOO_LONG>}'),
    '"counts": {"done": 1e308}',
    '"counts": {"done": Infinity}',
    fill('"last_seen": <HUGE>'),
    fill('"heartbeat": <HUGE>'),
    '"heartbeat": Infinity',
    fill('"first_start": <HUGE>'),
    fill('"in_progress": <HUGE>'),
    fill('"recent": {"<HUGE>": 1}'),
    fill('"recent": {"1": <HUGE>}'),
    fill('"minion": {"pid": <HUGE>, "start": <HUGE>}'),
    fill('"minion": <DEEP>'),
    fill('"slowest": [{"duration": <HUGE>, "t": <HUGE>, "start": <HUGE>, "param": <DEEP>}]'),
    fill('"errors": [{"t": <HUGE>, "duration": "x", "param": 1}]'),
    fill('"running": [{"id": "a", "start": <HUGE>, "param": 1}]'),
    fill('"stopped": {"t": 1, "exit_code": <HUGE>}'),
]


@pytest.mark.parametrize("damage", SUMMARY_DAMAGE, ids=range(len(SUMMARY_DAMAGE)))
def test_a_damaged_summary_is_a_warning_naming_it(tmp_path: Path, damage: str) -> None:
    reporter = minion(tmp_path, 1, heartbeat=0.0)
    for i in range(3):
        finish(reporter, i)
    reporter.heartbeat([])
    assert reporter.summary_path is not None
    summary = json.loads(reporter.summary_path.read_text())
    key = damage.split('"')[1]
    summary.pop(key, None)
    text = json.dumps(summary)
    reporter.summary_path.write_text(text[:-1] + ", " + damage + "}")
    status = read_status(tmp_path)
    _show(status)
    # Either the summary is refused (and the report replayed), or what it holds is shown
    # without the damage: never a traceback.
    if status.warnings:
        assert any(reporter.summary_path.name in w for w in status.warnings), status.warnings
        assert status.done == 3


EVENT_DAMAGE = [
    fill('{"ev":"task","t":1,"id":"x","param":1,"outcome":"done","start":<HUGE>,"duration":1}'),
    '{"ev":"task","t":1,"id":"x","param":1,"outcome":"done","start":1e308,"duration":1e308}',
    '{"ev":"task","t":1,"id":"x","param":1,"outcome":"done","start":1,"duration":Infinity}',
    fill('{"ev":"task","t":1,"id":"x","param":1,"outcome":"dead","start":1,"duration":1,'
         '"busy":<HUGE>}'),
    fill('{"ev":"task","t":1,"id":"x","param":<DEEP>,"outcome":"retry","start":1,"duration":1}'),
    fill('{"ev":"task","t":<HUGE>,"id":"x","param":1,"outcome":"retry","start":1,"duration":1}'),
    fill('{"ev":"task","t":1,"id":"x","param":<NESTED>,"outcome":"dead","start":1,'
         '"duration":1}'),
    fill('{"ev":"heartbeat","t":<HUGE>,"running":[{"id":"y","start":<HUGE>,"param":<HUGE>}]}'),
    fill('{"ev":"start","t":1,"heartbeat":<HUGE>,"minion":{"host":"h","pid":<HUGE>}}'),
    fill('{"ev":"stop","t":1,"exit_code":<HUGE>}'),
    fill('{"ev":"task","t":1,"id":"x","param":1,"outcome":"done","start":1,'
         '"duration":<TOO_LONG>}'),
    DEEP,
]


@pytest.mark.parametrize("damage", EVENT_DAMAGE, ids=range(len(EVENT_DAMAGE)))
def test_a_damaged_report_line_never_breaks_the_view(tmp_path: Path, damage: str) -> None:
    reporter = minion(tmp_path, 1, heartbeat=3600)
    finish(reporter, "a")
    assert reporter.path is not None and reporter.summary_path is not None
    with open(reporter.path, "a") as handle:
        handle.write(damage + "\n")
    finish(reporter, "b")
    for summary in (True, False):  # replayed from the start, or after a summary
        if not summary:
            reporter.summary_path.unlink()
        status = read_status(tmp_path)
        _show(status)
        assert status.done >= 2


def test_a_report_damaged_beyond_reading_is_skipped_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a report holds, reading it fails for that report only, said on one line."""
    import minionize.status.read as read

    good = minion(tmp_path, 1)
    finish(good, "a")
    bad = minion(tmp_path, 2)
    finish(bad, "b")
    assert bad.path is not None
    real = read.minion_status

    def broken(name: str, *args: Any) -> Any:
        if name == bad.path.stem:  # type: ignore[union-attr]
            raise OverflowError("int too large to convert to float")
        return real(name, *args)

    monkeypatch.setattr(read, "minion_status", broken)
    status = read_status(tmp_path)
    assert status.done == 1 and len(status.minions) == 1
    assert [w for w in status.warnings if bad.path.stem in w] == [
        f"{bad.path.name}: damaged report skipped (OverflowError: int too large to convert "
        "to float)"]


def test_the_eta_is_never_less_than_the_running_attempts_still_need(tmp_path: Path) -> None:
    # Params of 100 s each: four done (the last one a few seconds ago: a high recent
    # rate), one running for 14 s, nothing else to do. Rate alone gave 837 ms.
    reporter = minion(tmp_path, 1, heartbeat=0.0)
    now = time.time()
    for i in range(4):
        finish(reporter, i, start=now - 102 + i * 0.5, duration=100.0)
    reporter.heartbeat([Task(Delivery(9, "9"), wall_start=now - 14)])
    status = read_status(tmp_path, now=now, queue={"todo": 0, "in_flight": 1, "done": 4,
                                                   "dead": 0, "total": 5})
    assert status.remaining == 1
    assert status.eta is not None and status.eta >= 86.0 - 1
    assert status.to_json()["eta"] == status.eta
    reporter.stop(0)


def test_done_params_and_done_attempts_are_one_count_when_the_queue_tells(tmp_path: Path) -> None:
    from minionize.status.text import format_status

    # The report directory also holds an earlier run: 8 done attempts, 4 done params.
    reporter = minion(tmp_path, 1)
    for i in range(8):
        finish(reporter, i % 4)
    status = read_status(tmp_path, queue={"todo": 20, "in_flight": 0, "done": 4, "dead": 0,
                                          "total": 24})
    assert status.progress == (4, 24)
    text = format_status(status)
    assert "done 4 " in text and "done 8" not in text
    assert "8 done attempts in the reports" in text
    reporter.stop(0)


def test_counts_are_singular_or_plural() -> None:
    from minionize.status.text import count_text

    assert count_text(1, "param") == "1 param"
    assert count_text(0, "param") == "0 params"
    assert count_text(2, "minion") == "2 minions"


def test_one_param_left_is_said_in_the_singular(tmp_path: Path) -> None:
    from minionize.status.text import eta_text

    reporter = minion(tmp_path, 1)
    finish(reporter, 0)
    status = read_status(tmp_path, queue={"todo": 1, "in_flight": 0, "done": 1})
    assert eta_text(status).endswith(", 1 param left")
    reporter.stop(0)
    stopped = read_status(tmp_path, queue={"todo": 1, "in_flight": 0, "done": 1})
    assert eta_text(stopped) == "1 param left, no minion is making progress"


def test_the_eta_is_unknown_when_only_params_longer_than_the_mean_are_left(
        tmp_path: Path) -> None:
    from minionize.status.text import eta_text

    # Short params done at a high rate, then the last one has run 14 s: the rate alone
    # promised its end in under a second.
    reporter = minion(tmp_path, 1, heartbeat=0.0)
    now = time.time()
    for i in range(20):
        finish(reporter, i, start=now - 20 + i * 0.01, duration=0.3)
    reporter.heartbeat([Task(Delivery(99, "99"), wall_start=now - 14)])
    status = read_status(tmp_path, now=now, queue={"todo": 0, "in_flight": 1, "done": 20,
                                                   "dead": 0, "total": 21})
    assert status.eta is None and status.overdue == pytest.approx(14.0, abs=0.5)
    assert eta_text(status).startswith("unknown: 1 param left, all running, one for 14 s")
    # With params still to do, the rate tells.
    busy = read_status(tmp_path, now=now, queue={"todo": 5, "in_flight": 1, "done": 20,
                                                 "dead": 0, "total": 26})
    assert busy.overdue is None and busy.eta is not None
    reporter.stop(0)
