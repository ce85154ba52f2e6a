"""``minion-alloc`` on the command line, with fake sbatch and squeue on PATH."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from minionize.cli.alloc import main

FAKE = {
    "squeue": "#!/bin/sh\necho \"$@\" >> \"$CALLS\"\n",
    # A job that runs at once, here: a minion that drains the queue.
    "sbatch": "#!/bin/sh\necho \"sbatch $@ REPORTS=$REPORTER_JSON_DIRECTORY\" >> \"$CALLS\"\n"
              "minionize true > /dev/null 2>&1\necho 41\n",
    "scancel": "#!/bin/sh\necho \"scancel $@\" >> \"$CALLS\"\n",
}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in FAKE.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    python_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{python_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    monkeypatch.chdir(tmp_path)
    for name in ("MINION_ENGINE", "EXECO_PERSISTENCE_DIR", "REPORTER_JSON_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    return tmp_path


def fill(count: int) -> None:
    from minionize.cli.queue import main as queue

    assert queue(["fill", f"0..{count - 1}"]) == 0


def test_dry_run_says_what_it_would_submit_and_submits_nothing(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(10)
    assert main(["--dry-run", "--max-minions", "4", "job.sh", "./a.out"]) == 0
    err = capsys.readouterr().err
    assert "target 4, live 0, pending 0, backlog 10, in flight 0: submit 4" in err
    assert "would run: sbatch --parsable --array=0-3 --job-name=minions-" in err
    assert f"{cluster}/job.sh ./a.out" in err
    assert "sbatch" not in (cluster / "calls").read_text()


def test_it_submits_with_the_report_settings_and_logs_beside_the_reports(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(3)
    assert main(["--max-minions", "2", "--interval", "0.05", "job.sh"]) == 0
    assert "exit (queue drained and its minions finished)" in capsys.readouterr().err
    calls = (cluster / "calls").read_text()
    assert "--states=all --me --name=minions-" in calls
    assert "--array=0-1 --job-name=minions-" in calls
    assert f"REPORTS={cluster}/minion-report" in calls
    log = (cluster / "minion-report" / "minion-alloc.log").read_text()
    assert "submitted 2 minion(s) as job 41" in log


def test_bad_flags_are_one_line(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["--max-minions", "0", "job.sh"])
    assert usage.value.code == 2
    assert "'0' is not a whole number of at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--max-minions", "2", "--min-minions", "3", "job.sh"])
    assert "--min-minions is larger than --max-minions" in capsys.readouterr().err
    assert main(["--max-minions", "2", "missing.sh"]) == 2
    assert "no batch script missing.sh" in capsys.readouterr().err


def test_oar_is_found_when_oarsub_is_on_path(
        cluster: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fill(2)
    only = cluster / "oar-bin"
    only.mkdir()
    (only / "oarsub").write_text("#!/bin/sh\n")
    (only / "oarsub").chmod(0o755)
    (only / "oarstat").write_text("#!/bin/sh\n")  # no job of this name yet
    (only / "oarstat").chmod(0o755)
    monkeypatch.setenv("PATH", str(only))
    assert main(["--dry-run", "--max-minions", "4", "job.sh", "./a.out"]) == 0
    err = capsys.readouterr().err
    assert " on OAR, reports in " in err
    assert "would run: oarsub --array 2 -n minions-" in err
