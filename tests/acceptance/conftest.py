from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def script(name: str) -> str:
    """The console script installed with this Python (what a user's PATH gives)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run pip install -e .")
    return found


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment, as a user's shell in an empty directory would have."""
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINION_", "FILE_", "EXECO_", "REPORTER_", "DRY"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
