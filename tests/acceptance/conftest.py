from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import user_environment


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment, as a user's shell in an empty directory would have."""
    monkeypatch.chdir(tmp_path)
    return user_environment()
