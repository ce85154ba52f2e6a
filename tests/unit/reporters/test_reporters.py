"""The JSON and stdout reporters: files a reader can always trust, lines a person can read."""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from minionize import FuncCallback
from minionize.callbacks.base import Task
from minionize.config import Settings
from minionize.engines.base import Delivery
from minionize.errors import ConfigError
from minionize.minion.run import Minion
from minionize.reporters import load_reporter
from minionize.reporters.base import MinionInfo, TaskReport
from minionize.reporters.format import report_name
from minionize.reporters.json import JsonReporter
from minionize.reporters.stdout import StdoutReporter, format_task
from minionize.testing import MemoryEngine


def info(pid: int = 4242, **jobs: str) -> MinionInfo:
    return MinionInfo(minion_id="abc", host="node-7", pid=pid, start=time.time(), jobs=dict(jobs))


def report(param: Any = "x", outcome: str = "done", attempt: int = 1, **extra: Any) -> TaskReport:
    return TaskReport(param=param, param_id=str(extra.pop("param_id", param)), attempt=attempt,
                      outcome=outcome, start=time.time() - 0.5, duration=0.5, **extra)


def strict_lines(path: Path) -> list[dict[str, Any]]:
    """Every line, parsed as strict JSON (NaN and Infinity are errors)."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is incomplete"
    return [json.loads(line, parse_constant=refuse) for line in data.decode("ascii").splitlines()]


def summary(reporter: JsonReporter) -> dict[str, Any]:
    assert reporter.summary_path is not None
    loaded: dict[str, Any] = json.loads(reporter.summary_path.read_text())
    return loaded


def test_file_is_named_by_host_pid_and_job(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path)
    reporter.start(info(SLURM_JOB_ID="1239", SLURM_ARRAY_JOB_ID="1234", SLURM_ARRAY_TASK_ID="5"))
    assert reporter.path == tmp_path / "node-7_4242_1234_5.jsonl"
    assert reporter.summary_path == tmp_path / "node-7_4242_1234_5.summary.json"
    assert report_name(info(OAR_JOB_ID="99")) == "node-7_4242_99"
    assert report_name(info()) == "node-7_4242"


def test_same_identity_twice_gets_two_files(tmp_path: Path) -> None:
    # A restarted container has the same host name and pid 1: never share a file.
    first, second = JsonReporter(tmp_path), JsonReporter(tmp_path)
    first.start(info(pid=1))
    second.start(info(pid=1))
    assert first.path != second.path
    assert second.path is not None and second.path.name == "node-7_1.2.jsonl"


def test_identity_tasks_and_stop_are_recorded(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path)
    reporter.start(info(SLURM_JOB_ID="77"))
    reporter.task_finished(report("a", exit_code=0))
    reporter.task_finished(report("b", "retry", exit_code=3, reason="exit code 3",
                                  stderr_tail="line 1\nboom\n", stderr_path="logs/b.1.err",
                                  stdout_path="logs/b.1.out"))
    reporter.stop(1)
    assert reporter.path is not None
    start, done, failed, stop = strict_lines(reporter.path)
    assert start["ev"] == "start"
    assert start["minion"]["host"] == "node-7" and start["minion"]["pid"] == 4242
    assert start["minion"]["jobs"] == {"SLURM_JOB_ID": "77"}
    assert done["param"] == "a" and done["outcome"] == "done" and done["attempt"] == 1
    assert done["duration"] == pytest.approx(0.5) and done["exit_code"] == 0
    assert failed["outcome"] == "retry" and failed["exit_code"] == 3
    assert failed["stderr_tail"] == "line 1\nboom\n"
    # Absolute, so that the report is read from anywhere.
    assert failed["stderr_path"] == os.path.abspath("logs/b.1.err")
    assert failed["stdout_path"] == os.path.abspath("logs/b.1.out")
    assert stop == {"ev": "stop", "t": stop["t"], "exit_code": 1}


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_params_json_cannot_encode_are_reported_by_repr(tmp_path: Path) -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    odd = [{1, 2}, math.nan, float("inf"), object(), Unprintable(), {(1, 2): "tuple key"}, cycle,
           b"bytes", "caf\u00e9 \udcff surrogate"]
    reporter = JsonReporter(tmp_path)
    reporter.start(info())
    for param in odd:
        reporter.task_finished(report(param, "dead", param_id="p", stderr_tail="\x00\xff"))
    reporter.task_finished(report("fine"))
    reporter.stop(0)
    assert reporter.path is not None
    lines = strict_lines(reporter.path)
    tasks = [line for line in lines if line["ev"] == "task"]
    assert len(tasks) == len(odd) + 1
    assert tasks[0]["param"] == "{1, 2}" and tasks[0]["param_repr"] is True
    assert tasks[1]["param"] == "nan" and tasks[1]["param_repr"] is True
    assert tasks[4]["param"] == "<unrepresentable Unprintable>"
    assert tasks[-2]["param"] == "caf\u00e9 \udcff surrogate"  # a str survives, escaped
    assert tasks[-1] == {**tasks[-1], "param": "fine"} and "param_repr" not in tasks[-1]
    assert summary(reporter)["counts"] == {"done": 1, "retry": 0, "dead": len(odd), "released": 0}


def test_summary_is_current_at_start_heartbeat_and_stop(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path, heartbeat=0.0)
    reporter.start(info())
    assert summary(reporter)["counts"]["done"] == 0
    assert reporter.path is not None
    first_size = reporter.path.stat().st_size
    assert summary(reporter)["offset"] == first_size

    reporter.task_finished(report("a"))
    running = Task(Delivery({"x": {1, 2}}, "id-9", attempt=2))
    reporter.heartbeat([running])
    current = summary(reporter)
    assert current["counts"]["done"] == 1
    assert current["offset"] == reporter.path.stat().st_size
    assert current["running"] == [{"id": "id-9", "param": "{'x': {1, 2}}", "attempt": 2,
                                   "start": running.wall_start, "param_repr": True}]
    reporter.task_finished(report("b", "dead", exit_code=2, stderr_tail="bad"))
    reporter.stop(1)
    final = summary(reporter)
    assert final["stopped"]["exit_code"] == 1
    assert final["running"] == []
    assert final["counts"] == {"done": 1, "retry": 0, "dead": 1, "released": 0}
    assert final["errors"][0]["param"] == "b" and final["errors"][0]["stderr_tail"] == "bad"
    assert final["offset"] == reporter.path.stat().st_size
    # Replaced by rename: no temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "node-7_4242.jsonl", "node-7_4242.summary.json"]


def test_heartbeats_are_written_once_per_period(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path, heartbeat=3600.0)
    reporter.start(info())
    for _ in range(5):
        reporter.heartbeat([])
    reporter.stop(0)
    assert reporter.path is not None
    assert [line["ev"] for line in strict_lines(reporter.path)] == ["start", "stop"]


def test_concurrent_reports_stay_whole_lines(tmp_path: Path) -> None:
    reporter = JsonReporter(tmp_path, heartbeat=0.0)
    reporter.start(info())

    def work(worker: int) -> None:
        for i in range(300):
            reporter.task_finished(report({"w": worker, "i": i, "pad": "x" * (i % 50)}))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    beating = True

    def beat() -> None:
        while beating:
            reporter.heartbeat([])

    heart = threading.Thread(target=beat)
    heart.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    beating = False
    heart.join()
    reporter.stop(0)
    assert reporter.path is not None
    tasks = [line for line in strict_lines(reporter.path) if line["ev"] == "task"]
    assert len(tasks) == 2400
    assert summary(reporter)["counts"]["done"] == 2400


def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="REPORTER_JSON_DIRECTORY"):
        JsonReporter(blocker / "report").start(info())


def test_settings_choose_the_directory_and_heartbeat(tmp_path: Path) -> None:
    settings = Settings.from_env({"MINION_REPORTER": "json",
                                  "REPORTER_JSON_DIRECTORY": str(tmp_path / "r"),
                                  "MINION_HEARTBEAT": "0.5"})
    reporter = load_reporter(settings)
    assert isinstance(reporter, JsonReporter)
    assert reporter.directory == tmp_path / "r" and reporter.heartbeat_period == 0.5
    default = load_reporter(Settings.from_env({"MINION_REPORTER": "json"}))
    assert isinstance(default, JsonReporter)
    assert default.directory == Path("minion-report") and default.heartbeat_period == 5.0
    with pytest.raises(ConfigError, match="MINION_HEARTBEAT"):
        load_reporter(Settings.from_env({"MINION_REPORTER": "json", "MINION_HEARTBEAT": "soon"}))


def test_a_real_loop_reports_every_attempt(tmp_path: Path) -> None:
    def flaky(param: int) -> None:
        if param % 5 == 0:
            raise ValueError(f"no multiples of five: {param}")

    settings = Settings.from_env({"MINION_MAX_ATTEMPTS": "2", "MINION_CONCURRENCY": "3"})
    reporter = JsonReporter(tmp_path)
    code = Minion(FuncCallback(flaky), MemoryEngine(range(20)), reporter, settings).run()
    assert code == 1
    final = summary(reporter)
    assert final["counts"] == {"done": 16, "retry": 4, "dead": 4, "released": 0}
    assert final["minion"]["engine"] == "memory" and final["minion"]["concurrency"] == 3
    assert {e["param"] for e in final["errors"]} == {0, 5, 10, 15}
    assert "no multiples of five" in final["errors"][-1]["reason"]


def test_stdout_lines_are_readable() -> None:
    line = format_task(report({"x": 1}, "retry", attempt=2, exit_code=3, reason="exit code 3",
                              stderr_path="logs/x.2.err"))
    assert line.startswith("minionize: retry    attempt 2  0.500s  {\"x\":1}")
    assert line.endswith("(exit code 3; stderr in logs/x.2.err)")
    assert format_task(report("z", "dead", exit_code=9, reason="")).endswith("(exit 9)")
    assert format_task(report("ok")).endswith('0.500s  "ok"')
    assert '"' + "y" * 190 in format_task(report("y" * 1000)) and "..." in format_task(
        report("y" * 1000))


def test_stdout_reporter_writes_one_line_per_event_to_a_stream() -> None:
    stream = io.StringIO()
    reporter = StdoutReporter(stream)
    reporter.start(info(SLURM_JOB_ID="12"))
    reporter.task_finished(report("a"))
    reporter.task_finished(report({1, 2}, "dead", exit_code=1))
    reporter.stop(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "minionize: minion node-7:4242 job 12 starts"
    assert lines[1].startswith('minionize: done     attempt 1  0.500s  "a"')
    assert lines[2].startswith("minionize: dead     attempt 1  0.500s  {1, 2}  (exit 1)")
    assert lines[3] == "minionize: minion stops (exit 1): 1 done, 1 failed attempts, 1 dead-lettered"


def test_stdout_reporter_writes_to_the_file_descriptor(capfd: pytest.CaptureFixture[str]) -> None:
    reporter = StdoutReporter()
    print("buffered before", end="\n")
    reporter.task_finished(report("a"))
    os.write(1, b"task output\n")
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "buffered before"
    assert out[1].startswith('minionize: done     attempt 1')
    assert out[2] == "task output"


def test_summary_is_refreshed_every_few_hundred_lines(tmp_path: Path) -> None:
    # A fast minion between two heartbeats: readers never replay more than SUMMARY_EVERY lines.
    from minionize.reporters.json import SUMMARY_EVERY

    reporter = JsonReporter(tmp_path, heartbeat=3600.0)
    reporter.start(info())
    for i in range(SUMMARY_EVERY + 10):
        reporter.task_finished(report(i))
    assert summary(reporter)["counts"]["done"] == SUMMARY_EVERY
    reporter.stop(0)
    assert summary(reporter)["counts"]["done"] == SUMMARY_EVERY + 10


def test_the_fold_of_the_lines_is_the_summary_the_writer_saved(tmp_path: Path) -> None:
    # The writer folds as it goes; a reader folds the file: both must agree, line by line.
    from minionize.reporters.format import MinionState, read_events

    reporter = JsonReporter(tmp_path, heartbeat=0.0)
    reporter.start(info(SLURM_JOB_ID="5"))
    reporter.heartbeat([Task(Delivery("slow", "s", attempt=1))])
    for i in range(30):
        reporter.task_finished(report(i, ("done", "retry", "dead", "released")[i % 4], exit_code=i))
    reporter.stop(1)
    assert reporter.path is not None
    events, bad = read_events(reporter.path.read_bytes())
    folded = MinionState()
    for event in events:
        folded.apply(event)
    saved = summary(reporter)
    assert bad == 0
    assert folded.to_summary(saved["offset"], saved["t"]) == saved
    assert MinionState.from_summary(saved).to_summary(saved["offset"], saved["t"]) == saved


def test_a_large_param_is_cut_in_every_record_not_copied_whole(tmp_path: Path) -> None:
    big = {"data": "x" * 1_000_000}
    reporter = JsonReporter(tmp_path, heartbeat=0.0)
    reporter.start(info())
    reporter.heartbeat([Task(Delivery(big, "big-1"))])
    reporter.task_finished(report(big, "done", param_id="big-1"))
    reporter.stop(0)
    assert reporter.path is not None
    assert reporter.path.stat().st_size < 10_000  # not a megabyte per record
    lines = strict_lines(reporter.path)
    [task] = [line for line in lines if line["ev"] == "task"]
    [beat] = [line for line in lines if line["ev"] == "heartbeat"]
    for record in (task, beat["running"][0]):
        assert record["param"].startswith('{"data":"xxx') and record["param"].endswith("...")
        assert record["param_repr"] is True and record["param_cut"] is True
        assert record["id"] == "big-1"


def started_identity(tmp_path: Path, values: dict[str, str], engine: str) -> dict[str, Any]:
    """The ``minion`` of the start record a reporter from ``values`` writes for a minion
    whose engine is named ``engine``."""
    reporter = load_reporter(Settings.from_env(dict(values, MINION_REPORTER="json",
                                                    REPORTER_JSON_DIRECTORY=str(tmp_path))))
    minion = info()
    minion.engine = engine
    reporter.start(minion)
    assert isinstance(reporter, JsonReporter) and reporter.path is not None
    identity: dict[str, Any] = strict_lines(reporter.path)[0]["minion"]
    reporter.stop(0)
    return identity


def test_the_start_record_names_the_queue_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from minionize.reporters.queue_ref import queue_variables

    monkeypatch.chdir(tmp_path)
    sweep = started_identity(tmp_path / "a", {"EXECO_PERSISTENCE_DIR": "q"}, "sweep")["queue"]
    assert sweep["engine"] == "sweep" and sweep["location"] == str(tmp_path / "q")
    assert queue_variables(sweep, {"EXECO_PERSISTENCE_DIR": "elsewhere"})[
        "EXECO_PERSISTENCE_DIR"] == str(tmp_path / "q")
    execo = started_identity(tmp_path / "b", {"MINION_ENGINE": "execo"}, "sweep")["queue"]
    assert execo["location"] == str(tmp_path / "sweeps")
    stdin = started_identity(tmp_path / "c", {"MINION_ENGINE": "file", "FILE_PATH": "-"}, "file")
    assert stdin["queue"]["location"] == "-"
    with pytest.raises(ValueError, match="standard input"):
        queue_variables(stdin["queue"], {})
    # An engine object given from Python, not the one the settings name: no queue said.
    assert "queue" not in started_identity(tmp_path / "d", {}, "memory")


def test_a_credential_of_the_queue_is_not_written_in_the_report(tmp_path: Path) -> None:
    from minionize.reporters.queue_ref import queue_variables

    url = "redis://user:s3cret@db:6379/0"
    identity = started_identity(tmp_path, {"MINION_ENGINE": "redis", "MINION_REDIS_URL": url,
                                           "MINION_REDIS_STREAM": "jobs"}, "redis")
    ref = identity["queue"]
    assert "s3cret" not in json.dumps(identity)
    assert ref["location"] == ("MINION_REDIS_URL=redis://***@db:6379/0 MINION_REDIS_STREAM=jobs")
    # The reader's own URL is used when it is that one, else it is said to be missing.
    assert queue_variables(ref, {"MINION_REDIS_URL": url})["MINION_REDIS_URL"] == url
    with pytest.raises(ValueError, match="MINION_REDIS_URL holds a credential"):
        queue_variables(ref, {})
    # A default the minion used is recorded too: the reader's own setting does not win.
    mine = {"MINION_REDIS_URL": url, "MINION_REDIS_GROUP": "mine"}
    assert queue_variables(ref, mine)["MINION_REDIS_GROUP"] == ""


def test_lost_minions_hold_what_the_queue_has_in_flight(tmp_path: Path) -> None:
    from minionize.status import read_status

    lost = JsonReporter(tmp_path, heartbeat=0.0)
    lost.start(MinionInfo("m1", "node-1", 11, time.time() - 100))
    lost.heartbeat([Task(Delivery("a", "ida")), Task(Delivery("b", "idb"))])
    later = time.time() + 60  # silent for a minute: lost
    said = read_status(tmp_path, now=later)
    assert said.stranded == 2  # without the queue, what the report says
    # The queue lists what it has in flight: "b" is held by another minion now.
    listed = [{"id": "ida", "host": "node-1", "pid": 11}, {"id": "idb", "host": "node-2", "pid": 5}]
    status = read_status(tmp_path, now=later, queue={"in_flight": 2}, in_flight=listed)
    [minion] = status.minions
    assert status.stranded == 1 and [r["param"] for r in minion.running] == ["a"]
    # A list without holders: the ids still in flight.
    status = read_status(tmp_path, now=later, queue={"in_flight": 1}, in_flight=[{"id": "idb"}])
    assert status.stranded == 1 and [r["param"] for r in status.minions[0].running] == ["b"]
    # Counters only: at most what is in flight.
    assert read_status(tmp_path, now=later, queue={"in_flight": 1}).stranded == 1
    nothing = read_status(tmp_path, now=later, queue={"in_flight": 0, "todo": 0})
    assert nothing.stranded == 0 and nothing.minions[0].running == []


def test_the_outcomes_of_a_report_are_the_settles_in_the_summary_s_order() -> None:
    from minionize.engines.base import Settle
    from minionize.reporters.format import OUTCOMES, MinionState

    assert OUTCOMES == ("done", "retry", "dead", "released")
    assert {settle.value for settle in Settle} == set(OUTCOMES)
    assert list(MinionState().to_summary(0, 0.0)["counts"]) == list(OUTCOMES)
