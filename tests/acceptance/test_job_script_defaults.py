"""The shipped job scripts' defaults never hide a setting of the user's ``.env``.

Each script gives the minion defaults (the grace period, the lease, the reports...).
minionize lets the real environment win over ``.env``, so a default the script exported
would silently replace what the user wrote in ``.env`` (the place the OAR example tells
users to put their settings, OAR giving a job none of the submitting environment). Run
as a scheduler runs them, with a ``minionize`` on PATH that records its environment.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "slurm": (ROOT / "examples" / "slurm" / "minions.sbatch", "20"),
    "oar": (ROOT / "examples" / "oar" / "minions.oar", "30"),
    "sge": (ROOT / "examples" / "sge" / "minions.sge", "30"),
}

RECORDER = '#!/bin/sh\nenv > "$RECORD"\n'


def minion_env(tmp_path: Path, script: Path, **env: str) -> dict[str, str]:
    """The environment the script gives minionize."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "minionize").write_text(RECORDER)
    (bin_dir / "minionize").chmod(0o755)
    record = tmp_path / "record"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MINION_", "SLURM_", "OAR_", "REPORTER_", "EXECO_"))
            and k not in ("JOB_ID", "SGE_TASK_ID")}
    done = subprocess.run([str(script), "true"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env={**base, "PATH": f"{bin_dir}:{base.get('PATH', '/usr/bin:/bin')}",
                                           "RECORD": str(record), **env})
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)


@pytest.mark.parametrize("scheduler", sorted(SCRIPTS))
def test_dotenv_settings_win_over_the_scripts_defaults(tmp_path: Path, scheduler: str) -> None:
    script, grace = SCRIPTS[scheduler]
    # No setting anywhere: the script's defaults.
    got = minion_env(tmp_path, script)
    assert got["MINION_GRACE_PERIOD"] == grace and got["MINION_LEASE"] == "300"
    assert got["MINION_REPORTER"] == "json" and got["EXECO_PERSISTENCE_DIR"] == "sweeps"
    # Settings in .env (one with export, one with spaces): the script leaves them to
    # minionize, which reads .env; the others keep their defaults.
    (tmp_path / ".env").write_text("MINION_GRACE_PERIOD=3\nexport MINION_LEASE=60\n"
                                   "#MINION_REPORTER=null\n REPORTER_JSON_DIRECTORY = r\n")
    got = minion_env(tmp_path, script)
    assert "MINION_GRACE_PERIOD" not in got and "MINION_LEASE" not in got
    assert "REPORTER_JSON_DIRECTORY" not in got
    assert got["MINION_REPORTER"] == "json"  # a commented line sets nothing
    # The real environment wins over both.
    got = minion_env(tmp_path, script, MINION_GRACE_PERIOD="7")
    assert got["MINION_GRACE_PERIOD"] == "7"
