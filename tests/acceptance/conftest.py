from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment, as a user's shell in an empty directory would have."""
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINION_", "FILE_", "EXECO_", "REPORTER_", "DRY"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
