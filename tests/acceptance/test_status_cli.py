"""`minion-status` and `mtop` as a user types them, after real `minionize` runs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from minionize.callbacks.base import Task
from minionize.engines.base import Delivery
from minionize.reporters.base import MinionInfo, TaskReport
from minionize.reporters.json import JsonReporter
from tests.conftest import queue_status, sh, start_minion, status_json
from tests.services import script, wait_for

FAILING_TASK = 'case "$1" in bad*) echo "traceback of $1" >&2; echo "no luck with $1" >&2; exit 3;; esac\n'


def run_minion(env: dict[str, str], params: str) -> subprocess.CompletedProcess[str]:
    Path("params.txt").write_text(params)
    Path("task.sh").write_text(FAILING_TASK)
    return sh("MINION_ENGINE=file FILE_PATH=params.txt MINION_REPORTER=json MINION_LOG_DIR=logs "
              "MINION_MAX_ATTEMPTS=2 minionize sh task.sh", env)


def test_no_reports_yet(user_env: dict[str, str]) -> None:
    result = sh("minion-status", user_env)
    assert result.returncode == 0, result.stderr
    assert "No minion reports in minion-report (the directory does not exist)." in result.stdout
    assert "MINION_REPORTER=json" in result.stdout
    out = status_json(user_env)
    assert {k: out[k] for k in ("done", "failed", "dead", "running", "minions")} == {
        "done": 0, "failed": 0, "dead": 0, "running": 0, "minions": []}
    Path("minion-report").mkdir()
    result = sh("minion-status", user_env)
    assert result.stdout.startswith("No minion reports in minion-report.\n")


def test_a_short_run_with_failures(user_env: dict[str, str]) -> None:
    run = run_minion(user_env, "ok1\nok2\nbad1\nok3\nok4\nok5\n")
    assert run.returncode == 1, run.stderr
    result = sh("minion-status", user_env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "minion-report: 1 minion: 0 alive, 1 finished, 0 lost" in text
    assert "done 5   failed attempts 2   dead-lettered 1   running now 0" in text
    assert "overall over" in text and "/s" in text  # a sub-second run has a real rate
    assert '"bad1"  attempt 2  dead-lettered' in text
    assert "| no luck with bad1" in text
    [log] = Path("logs").glob("params.txt-*-3.2.err")  # named by the param id: file, run, line
    log = log.absolute()  # reports are read from anywhere: their log paths are absolute
    assert f"log: {log}" in text
    assert "no luck with bad1" in log.read_text()

    out = status_json(user_env)
    assert (out["done"], out["failed"], out["dead"], out["running"]) == (5, 2, 1, 0)
    assert [m["state"] for m in out["minions"]] == ["finished"]
    assert out["minions"][0]["exit_code"] == 1
    assert out["rate"]["overall"] > 0 and out["rate"]["recent"] is None
    assert out["errors"][0]["stderr_tail"].splitlines() == ["traceback of bad1", "no luck with bad1"]
    assert out["errors"][0]["stderr_path"] == str(log)


def test_directory_from_dotenv_and_from_the_argument(user_env: dict[str, str]) -> None:
    Path(".env").write_text("REPORTER_JSON_DIRECTORY=reports\n")
    assert run_minion(user_env, "ok1\nok2\n").returncode == 0
    assert Path("reports").is_dir() and not Path("minion-report").exists()
    assert status_json(user_env)["done"] == 2
    Path(".env").unlink()
    assert status_json(user_env)["minions"] == []
    assert status_json(user_env, "reports")["done"] == 2


def test_stdout_reporter_prints_a_line_per_task(user_env: dict[str, str]) -> None:
    Path("task.sh").write_text(FAILING_TASK)
    result = sh("printf 'ok1\\nbad1\\n' | MINION_ENGINE=file MINION_REPORTER=stdout "
                "MINION_MAX_ATTEMPTS=1 minionize sh task.sh", user_env)
    lines = result.stdout.splitlines()
    assert any(line.startswith('minionize: done     attempt 1') and line.endswith('"ok1"')
               for line in lines), lines
    assert any(line.startswith("minionize: dead     attempt 1") and '"bad1"  (exit code 3)' in line
               for line in lines), lines
    assert lines[-1] == "minionize: minion stops (exit 1): 1 done, 1 failed attempts, 1 dead-lettered"


def test_corrupt_and_torn_files_beside_good_ones(user_env: dict[str, str]) -> None:
    assert run_minion(user_env, "ok1\nok2\nok3\n").returncode == 0
    report = Path("minion-report")
    (report / "other_1.jsonl").write_bytes(b'{"ev":"start","t":1,"minion":{"host":"other"')
    (report / "other_1.summary.json").write_bytes(b"\x00\x01 not json")
    (report / "empty_2.jsonl").write_bytes(b"")
    result = sh("minion-status", user_env)
    assert result.returncode == 0, result.stderr
    assert "done 3" in result.stdout
    assert "warning: other_1.summary.json unreadable" in result.stdout
    # An empty .jsonl is no report: skipped, said once on stderr (issue 11 item 7).
    assert result.stderr.count("empty_2.jsonl is not a minion report") == 1, result.stderr
    out = status_json(user_env)
    assert out["done"] == 3 and len(out["minions"]) == 2


def test_a_jsonl_that_is_not_a_report_is_no_lost_minion(user_env: dict[str, str]) -> None:
    assert run_minion(user_env, "ok1\n").returncode == 0
    Path("minion-report/data.jsonl").write_text('{"x": 1}\n')
    result = sh("minion-status", user_env)
    assert result.returncode == 0 and "0 lost" in result.stdout and " d " not in result.stdout
    assert result.stderr.splitlines() == [
        "minion-status: warning: minion-report/data.jsonl is not a minion report (it does not "
        "begin with a start record): skipped"]


def test_mtop_without_rich_names_the_extra(user_env: dict[str, str]) -> None:
    code = ("import sys; sys.modules['rich'] = None\n"
            "from minionize.cli.status import mtop_main\n"
            "sys.exit(mtop_main(['--no-queue']))\n")
    result = subprocess.run([sys.executable, "-c", code], env=user_env, text=True,
                            capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mtop: error: mtop needs the Python package 'rich': pip install 'minionize[mtop]'")


def test_watch_and_json_do_not_mix(user_env: dict[str, str]) -> None:
    result = sh("minion-status --watch --json", user_env)
    assert result.returncode == 2 and "do not go together" in result.stderr


def fake_report(directory: Path) -> None:
    """An alive SLURM array minion running a param, a lost one, and a failure."""
    alive = JsonReporter(directory, heartbeat=0.0)
    alive.start(MinionInfo("a", "node-1", 101, time.time(),
                           {"SLURM_ARRAY_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "5"}))
    now = time.time()
    for i in range(40):
        alive.task_finished(TaskReport(i, str(i), 1, "done", now - 20 + i * 0.5, 0.4))
    alive.task_finished(TaskReport("x=7", "x=7", 3, "dead", now - 2, 1.0, exit_code=3,
                                   reason="exit code 3", stderr_tail="ValueError: x too big\n",
                                   stderr_path="logs/x=7.3.err"))
    alive.heartbeat([Task(Delivery({"alpha": 0.5}, "p9"))])
    lost = JsonReporter(directory, heartbeat=0.0)
    lost.start(MinionInfo("b", "node-2", 202, now - 100, {"OAR_JOB_ID": "4242"}))
    # Silent for a minute, without a stop line: what a SIGKILL leaves.
    assert lost.summary_path is not None
    data = json.loads(lost.summary_path.read_text())
    data["last_seen"] = now - 60
    lost.summary_path.write_text(json.dumps(data))


def test_the_live_view_as_recorded_by_rich(tmp_path: Path) -> None:
    from rich.console import Console

    from minionize.status.tui import watch

    fake_report(tmp_path)
    console = Console(record=True, width=130, height=40, file=io.StringIO(), force_terminal=False)
    assert watch(str(tmp_path), ask_queue=False, console=console, frames=1, interval=0.01) == 0
    screen = console.export_text()
    assert "2 minions: 1 alive, 1 lost, 0 finished" in screen
    assert "done 40   failed attempts 1   dead-lettered 1" in screen
    row = next(line for line in screen.splitlines() if line.startswith("node-1:101"))
    assert "1234_5" in row and "alive" in row and '{"alpha":0.5}' in row
    lost_row = next(line for line in screen.splitlines() if line.startswith("node-2:202"))
    assert "4242" in lost_row and "lost 1 min" in lost_row
    assert '"x=7"  attempt 3  dead-lettered  exit code 3\n' in screen
    assert f"      | ValueError: x too big   log: {os.path.abspath('logs/x=7.3.err')}" in screen
    assert "throughput" in screen


@pytest.fixture
def tmux(user_env: dict[str, str]) -> Any:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (tests/run.sh installs it)")
    socket = f"minion-status-test-{uuid.uuid4().hex[:8]}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", socket, *args], env=user_env, text=True,
                              capture_output=True, timeout=20)

    yield run
    run("kill-server")


def test_mtop_in_a_terminal(user_env: dict[str, str], tmux: Any) -> None:
    """A real minion runs a long task; mtop shows it in tmux; q quits and restores the tty."""
    Path("params.txt").write_text("30\n")
    user_env.update(MINION_ENGINE="file", FILE_PATH="params.txt", MINION_REPORTER="json",
                    MINION_HEARTBEAT="0.5", MINION_GRACE_PERIOD="1")
    minion = subprocess.Popen([script("minionize"), "sleep"], env=user_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def running() -> bool:
            out = status_json(user_env, "--no-queue")
            return out["running"] == 1

        wait_for(running, 20, "the minion to report its running task")
        mtop = script("mtop")
        command = (f"{mtop} --no-queue; echo mtop-exit=$?; "
                   "stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo; sleep 60")
        started = tmux("new-session", "-d", "-s", "top", "-x", "140", "-y", "35", command)
        assert started.returncode == 0, started.stderr

        def screen() -> str:
            return tmux("capture-pane", "-p", "-t", "top").stdout

        wait_for(lambda: "RUNNING FOR" in screen(), 20, "mtop to draw its table")
        text = screen()
        assert "1 minion: 1 alive, 0 lost, 0 finished" in text, text
        row = next(line for line in text.splitlines() if " alive " in line)
        assert '"30"' in row and "-" in row
        first = text
        wait_for(lambda: screen() != first, 5, "mtop to refresh (its clock ticks)")
        tmux("send-keys", "-t", "top", "q")
        wait_for(lambda: "mtop-exit=0" in screen(), 10, "q to quit mtop")
        # cbreak mode was undone: canonical input and echo are back (else -icanon, -echo).
        wait_for(lambda: {"icanon", "echo"} <= set(screen().split()), 10,
                 "the terminal to be restored")
    finally:
        minion.terminate()
        minion.communicate(timeout=30)


def test_damaged_reports_are_one_warning_each_never_a_traceback(user_env: dict[str, str]) -> None:
    """Issue 20 item 15: a summary with a 400- or 5000-digit number or nested 100000 deep,
    a report line nested that deep: minion-status, its --json and mtop say which file and
    show the rest."""
    assert run_minion(user_env, "ok1\nok2\nok3\n").returncode == 0
    report = Path("minion-report")
    good = next(report.glob("*.jsonl"))
    for name, damage in (("huge", "9" * 400), ("long", "9" * 5000), ("deep", "[" * 100_000)):
        shutil.copy(good, report / f"{name}_1.jsonl")
        summary = json.loads((report / f"{good.stem}.summary.json").read_text())
        summary["counts"]["done"] = "@"
        (report / f"{name}_1.summary.json").write_text(json.dumps(summary).replace('"@"', damage))
    with open(report / "deep_1.jsonl", "a") as handle:
        handle.write('{"ev":"task","t":1,"param":' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = sh("minion-status --no-queue", user_env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "done 12" in result.stdout  # each copy replayed from its report
    for name in ("huge", "long", "deep"):
        said = [line for line in result.stdout.splitlines() if f"{name}_1.summary.json" in line]
        assert len(said) == 1 and "unreadable" in said[0], result.stdout
    assert "deep_1.jsonl: skipped 1 unreadable line(s)" in result.stdout
    out = status_json(user_env, "--no-queue")
    assert out["done"] == 12 and len(out["minions"]) == 4

    from rich.console import Console

    from minionize.status.tui import watch

    console = Console(record=True, width=130, height=40, file=io.StringIO(), force_terminal=False)
    assert watch("minion-report", ask_queue=False, console=console, frames=1, interval=0.01) == 0
    assert "done 12" in console.export_text()


def test_held_by_lost_minions_is_what_the_queue_still_has_in_flight(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 22 item 4: a minion SIGKILLed with 2 params running; another minion reruns
    them once their leases end; minion-status then says nothing is held."""
    assert sh("minion-queue fill 1..4", user_env).returncode == 0
    env = dict(user_env, MINION_REPORTER="json", MINION_HEARTBEAT="0.2", MINION_LEASE="3",
               MINION_GRACE_PERIOD="1")
    first = start_minion(dict(env, NAP="60"), tmp_path, "-j", "2", "sh", "-c", 'sleep "$NAP"',
                         "task")
    try:
        wait_for(lambda: status_json(env, "--no-queue")["running"] == 2, 30,
                 "the first minion to report its 2 running params")
    finally:
        first.kill_group()
    wait_for(lambda: status_json(env, "--no-queue", "--lost-after", "0.5")["lost"] == 1, 10,
             "the killed minion to count as lost")
    # Its report says it ran 2 params: without the queue, that is all there is to say.
    assert status_json(env, "--no-queue", "--lost-after", "0.5")["stranded"] == 2

    rerun = sh("NAP=0 minionize --wait sh -c 'sleep \"$NAP\"' task", env)
    assert rerun.returncode == 0, rerun.stderr
    assert queue_status(env)["done"] == 4

    result = sh("minion-status --lost-after 0.5", env)
    assert result.returncode == 0, result.stderr
    assert "1 lost" in result.stdout and "held by lost minions" not in result.stdout, result.stdout
    out = status_json(env, "--lost-after", "0.5")
    assert out["stranded"] == 0, out
    [dead] = [m for m in out["minions"] if m["state"] == "lost"]
    assert dead["running"] == [] and dead["in_progress"] == 0, dead


def test_a_silent_minion_still_holding_its_params_is_said_to_hold_them(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    """The other side of item 4: a stopped minion (SIGSTOP: silent, lost, its process
    there) keeps its leases; the queue lists it as their holder, so they are held."""
    assert sh("minion-queue fill 1..2", user_env).returncode == 0
    env = dict(user_env, MINION_REPORTER="json", MINION_HEARTBEAT="0.2")
    stopped = start_minion(env, tmp_path, "-j", "2", "sleep", "60")
    try:
        wait_for(lambda: status_json(env, "--no-queue")["running"] == 2, 30,
                 "the minion to report its 2 running params")
        os.killpg(stopped.pid, signal.SIGSTOP)
        wait_for(lambda: status_json(env, "--lost-after", "0.5")["lost"] == 1, 10,
                 "the stopped minion to count as lost")
        out = status_json(env, "--lost-after", "0.5")
        assert out["queue"]["in_flight"] == 2 and out["stranded"] == 2, out
        assert sorted(r["param"] for r in out["minions"][0]["running"]) == [1, 2]
        assert "held by lost minions 2" in sh("minion-status --lost-after 0.5", env).stdout
    finally:
        stopped.kill_group()
