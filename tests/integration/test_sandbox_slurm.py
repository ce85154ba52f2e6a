"""Tasks with files on a real single-node SLURM cluster: an array of minions submitted
with ``examples/slurm/minions.sbatch``, sandboxes on node-local scratch (another
filesystem than the submission directory, as ``$TMPDIR`` is on a cluster node), outputs
collected into the shared submission directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import wait_for
from tests.services.slurm import SlurmCluster, SlurmError

pytestmark = pytest.mark.service("slurm")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "slurm" / "minions.sbatch"
BIN = Path(sys.executable).parent
PAIRS = 20
FAILS = 4  # exits 1 with its outputs written
NO_INPUT = 9  # its second input is missing
TASK = """#!/bin/sh
cat inputfile_$1.txt secondinputfile_$1.txt sharedfile.txt > cat_output_$1.txt
echo "array task $SLURM_ARRAY_TASK_ID in $MINION_SANDBOX" >> cat_output_$1.txt
ls > ls_output_$1.txt
if [ "$1" = 4 ]; then exit 1; fi
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than ``tmp_path`` where one exists (a tmpfs),
    as a node's local scratch is; else a sibling directory."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if base is not None and os.stat(base).st_dev == os.stat(tmp_path).st_dev:
        base = None
    path = Path(tempfile.mkdtemp(prefix="minionize-node-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def command(env: dict[str, str], cwd: Path, *argv: str) -> str:
    result = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def wait_job(slurm: SlurmCluster, job: str, directory: Path) -> str:
    """Wait for ``job`` to end (leaving no job behind); the minions' outputs."""
    try:
        slurm.wait_finished(job, 120)
    finally:
        for label in slurm.jobs():
            try:
                slurm.scancel(label.split("_")[0], "--signal=KILL")
            except SlurmError:
                pass
        wait_for(lambda: not slurm.jobs(), 30, "the test's jobs to end", every=0.2)
    return "\n".join(p.read_text() for p in sorted(directory.glob("minion-*.out")))


def test_array_of_minions_with_node_local_sandboxes(
    slurm: SlurmCluster, tmp_path: Path, scratch: Path
) -> None:
    (tmp_path / "in").mkdir()
    for i in range(PAIRS):
        (tmp_path / "in" / f"inputfile_{i}.txt").write_text(f"first {i}\n")
        if i != NO_INPUT:
            (tmp_path / "in" / f"secondinputfile_{i}.txt").write_text(f"second {i}\n")
    (tmp_path / "in" / "sharedfile.txt").write_text("shared\n")
    task = tmp_path / "task.sh"
    task.write_text(TASK)
    task.chmod(0o755)
    env = {
        **slurm.env,
        "EXECO_PERSISTENCE_DIR": str(tmp_path / "sweeps"),
        "MINION_MAX_ATTEMPTS": "2",
        # The files of the tasks, as variables the job inherits.
        "MINION_SANDBOX": str(scratch / "work"),
        "MINION_INPUT": "in/inputfile_{}.txt\nin/secondinputfile_{}.txt",
        "MINION_SHARED": "in/sharedfile.txt",
        "MINION_OUTPUT": "cat_output_{}.txt\nls_output_{}.txt",
        "MINION_COLLECT": "results",
    }
    command(env, tmp_path, "minion-queue", "fill", "--from-files", "in/inputfile_{}.txt")
    job = slurm.sbatch(SCRIPT, args=["./task.sh", "{}"], options=["--array=0-1"],
                       cwd=tmp_path, env=env)
    outputs = wait_job(slurm, job, tmp_path)

    good = set(range(PAIRS)) - {FAILS, NO_INPUT}
    results = tmp_path / "results"
    # Exactly the outputs of the successes, whole, and no temporary copy left.
    assert sorted(n for n in os.listdir(results) if not n.startswith(".")) == sorted(
        f"{kind}_output_{i}.txt" for i in good for kind in ("cat", "ls")), outputs
    tasks = set()
    for i in good:
        lines = (results / f"cat_output_{i}.txt").read_text().splitlines()
        assert lines[:3] == [f"first {i}", f"second {i}", "shared"]
        assert lines[3].startswith("array task ") and f" in {scratch / 'work'}/" in lines[3]
        tasks.add(lines[3].split()[2])
        assert (results / f"ls_output_{i}.txt").read_text().split() == [
            f"cat_output_{i}.txt", f"inputfile_{i}.txt", f"ls_output_{i}.txt",
            f"secondinputfile_{i}.txt", "sharedfile.txt"]
    assert tasks == {"0", "1"}, "both minions of the array ran params"
    dead = {
        int(row["param"]): row  # --from-files: "9" for inputfile_9.txt
        for row in map(json.loads, command(env, tmp_path, "minion-queue", "list", "dead",
                                           "--json").splitlines())
    }
    assert set(dead) == {FAILS, NO_INPUT}
    assert dead[FAILS]["reason"] == "exit code 1"
    assert "in/secondinputfile_9.txt' does not exist" in str(dead[NO_INPUT]["reason"])
    # On the node, only the failed param's sandboxes are left, named by its id: its last
    # attempt's, and its first's when another minion ran that one (a minion removes
    # only the sandboxes it made).
    left = sorted(name.rsplit(".", 1)[0] for name in os.listdir(scratch / "work"))
    assert left in ([f"{dead[FAILS]['id']}.2"], [f"{dead[FAILS]['id']}.1", f"{dead[FAILS]['id']}.2"])


def test_the_job_script_of_the_docs(slurm: SlurmCluster, tmp_path: Path, scratch: Path) -> None:
    """docs/clusters.md's job script, as shown there, with the node's $TMPDIR."""
    text = (ROOT / "docs" / "clusters.md").read_text()
    section = text[text.index("## Tasks with files on node-local scratch"):]
    script = section.split("```\n")[1]
    assert script.startswith("#!/bin/bash\n") and "--sandbox" not in script
    (tmp_path / "job.sbatch").write_text(script)
    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"inputfile_{i}.txt").write_text(f"first {i}\n")
    (tmp_path / "task.sh").write_text("#!/bin/sh\ncat inputfile_$1.txt > out_$1.txt\n")
    (tmp_path / "task.sh").chmod(0o755)
    env = {**slurm.env, "EXECO_PERSISTENCE_DIR": str(tmp_path / "sweeps"),
           "TMPDIR": str(scratch)}
    command(env, tmp_path, "minion-queue", "fill", "--from-files", "in/inputfile_{}.txt")
    job = slurm.sbatch(tmp_path / "job.sbatch", options=["--array=0-1"], cwd=tmp_path, env=env)
    outputs = wait_job(slurm, job, tmp_path)
    collected = sorted(n for n in os.listdir(tmp_path / "results") if not n.startswith("."))
    assert collected == [f"out_{i}.txt" for i in range(6)], outputs
    assert (tmp_path / "results" / "out_5.txt").read_text() == "first 5\n"
    assert os.listdir(scratch / "work") == []
