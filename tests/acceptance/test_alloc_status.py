"""``minion-alloc`` then ``minion-status`` as a user types them, with a fake sbatch and
squeue on PATH: the status shows the allocator's last decision in one line (text and
``--json``), and nothing in a directory where no allocator ran."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import sh, status_json
from tests.services import script

#: sbatch runs the array's one minion at once when RUN is set, else leaves its jobs
#: pending (squeue lists what it wrote); both keep the arguments they got in $CALLS.
FAKE = {
    "sbatch": """#!/bin/sh
echo "sbatch $*" >> "$CALLS"
count=$(echo "$*" | sed 's/.*--array=0-\\([0-9]*\\).*/\\1/')
if [ -n "$RUN" ]; then minionize true > /dev/null 2>&1; echo 41; exit 0; fi
for n in $(seq 0 "$count"); do
  printf '41_%s\\037PENDING\\037Priority\\0370\\037\\037\\037\\037\\037\\037\\n' "$n" >> "$JOBS"
done
echo 41
""",
    "squeue": '#!/bin/sh\necho "squeue $*" >> "$CALLS"\ncat "$JOBS" 2>/dev/null\nexit 0\n',
    "scancel": '#!/bin/sh\necho "scancel $*" >> "$CALLS"\n: > "$JOBS"\n',
}


def cluster(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the fake scheduler first on PATH, and a job script."""
    bindir = Path("bin").absolute()
    bindir.mkdir()
    for name, text in FAKE.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    Path("job.sh").write_text("#!/bin/sh\nexec minionize \"$@\"\n")
    return {**env, "PATH": f"{bindir}{os.pathsep}{env['PATH']}",
            "CALLS": str(Path("calls").absolute()), "JOBS": str(Path("jobs").absolute())}


def allocator_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("allocator")]


def test_no_allocator_no_line(user_env: dict[str, str]) -> None:
    run = sh("minion-queue fill 0..2 && MINION_REPORTER=json minionize true", user_env)
    assert run.returncode == 0, run.stderr
    status = sh("minion-status", user_env)
    assert status.returncode == 0 and allocator_lines(status.stdout) == []
    assert status_json(user_env)["allocator"] is None


def test_the_last_decision_of_a_drained_queue(user_env: dict[str, str]) -> None:
    env = {**cluster(user_env), "RUN": "1"}
    run = sh("minion-queue fill 0..9 && minion-alloc --max-minions 2 --interval 0.1 job.sh true",
             env)
    assert run.returncode == 0, run.stderr
    assert "submitted 2 minion(s) as job 41" in run.stderr
    status = sh("minion-status", env)
    assert status.returncode == 0, status.stderr
    assert "1 minion: 0 alive, 1 finished, 0 lost" in status.stdout
    [line] = allocator_lines(status.stdout)
    assert " on SLURM: target 0, live 0, pending 0, backlog 0, in flight 0: exit (queue " \
        "drained and its minions finished)" in line
    assert line.startswith("allocator at ") and ", jobs minions-" in line
    decision = status_json(env)["allocator"]
    assert decision["act"] == "exit" and decision["backlog"] == 0
    assert decision["queue"] == f"sweep queue {Path('sweeps').absolute()}"
    assert abs(decision["t"] - time.time()) < 60


def test_pending_jobs_while_it_runs(user_env: dict[str, str]) -> None:
    env = cluster(user_env)
    assert sh("minion-queue fill 0..99", env).returncode == 0
    alloc = subprocess.Popen([script("minion-alloc"), "--max-minions", "4", "--interval", "0.2",
                              "job.sh", "true"], env=env, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            status = sh("minion-status", env)
            assert status.returncode == 0, status.stderr
            lines = allocator_lines(status.stdout)
            if lines and "pending 4" in lines[0]:
                line = lines[0]
                break
            time.sleep(0.2)
        assert "No minion reports in minion-report." in status.stdout
        assert line.endswith("target 4, live 0, pending 4, backlog 100, in flight 0: submit "
                             "nothing (backlog 100 / 1 per minion, capped by --max-minions 4: "
                             "enough minions)"), status.stdout
        decision = status_json(env)["allocator"]
        assert (decision["target"], decision["pending"], decision["scheduler"]) == (
            4, 4, "SLURM")
    finally:
        alloc.send_signal(signal.SIGINT)
        _, err = alloc.communicate(timeout=30)
    assert alloc.returncode == 130, err
    assert Path("calls").read_text().count("sbatch ") == 1
