"""``examples/oar/minions.oar`` as OAR runs it, without OAR: the OAR_* variables set,
the checkpoint signal (SIGTERM, ``--signal 15``) sent to the script's own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import queue_status, status_json
from tests.services import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "oar" / "minions.oar"
BIN = Path(sys.executable).parent


@pytest.fixture
def job(tmp_path: Path) -> Iterator[dict[str, str]]:
    nodefile = tmp_path / "nodefile"
    # Two cores on this host, two on another: MINION_CONCURRENCY=auto gives 2.
    nodefile.write_text(f"{socket.gethostname()}\n" * 2 + "other-node\n" * 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINION_", "SLURM_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        OAR_JOB_ID="4242",
        OAR_ARRAY_ID="4240",
        OAR_ARRAY_INDEX="2",
        OAR_NODEFILE=str(nodefile),
        MINION_GRACE_PERIOD="2",
    )
    yield env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_checkpoint_signal_gives_params_back_and_asks_for_resubmission(
    tmp_path: Path, job: dict[str, str]
) -> None:
    run([str(BIN / "minion-queue"), "fill", "0..5"], tmp_path, job)
    script = subprocess.Popen(
        [str(SCRIPT), "sh", "-c", "sleep 60", "task"],
        cwd=tmp_path,
        env=job,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: queue_status(job, cwd=tmp_path).get("in_flight") == 2, 20, "2 tasks")
        script.send_signal(signal.SIGTERM)  # what oarexec does with the checkpoint signal
        output, _ = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()

    assert script.returncode == 99, output
    assert "asking OAR to resubmit" in output
    status = queue_status(job, cwd=tmp_path)
    assert status["todo"] == 6 and status["in_flight"] == 0 and status["done"] == 0, status

    report = status_json(job, cwd=tmp_path)
    (minion,) = report["minions"]
    assert minion["job"] == "4242"
    assert minion["jobs"] == {"OAR_JOB_ID": "4242", "OAR_ARRAY_ID": "4240", "OAR_ARRAY_INDEX": "2"}
    assert minion["released"] == 2 and minion["exit_code"] == 0, minion


def test_drained_queue_ends_the_job_normally(tmp_path: Path, job: dict[str, str]) -> None:
    run([str(BIN / "minion-queue"), "fill", "0..3"], tmp_path, job)
    result = subprocess.run(
        [str(SCRIPT), "true"], cwd=tmp_path, env=job, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert queue_status(job, cwd=tmp_path)["done"] == 4


def test_a_failed_param_is_reported_in_the_exit_code(tmp_path: Path, job: dict[str, str]) -> None:
    run([str(BIN / "minion-queue"), "fill", "0..1"], tmp_path, job)
    env = {**job, "MINION_MAX_ATTEMPTS": "1"}
    result = subprocess.run(
        [str(SCRIPT), "false"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    # 1: dead letters; not 99, so OAR does not resubmit a job that would fail again.
    assert result.returncode == 1, result.stdout + result.stderr
    assert queue_status(job, cwd=tmp_path)["dead"] == 2
