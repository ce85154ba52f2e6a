"""``minion-queue`` turns the errors a user can meet into one line (issue 11 item 7)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from minionize.cli import queue


def test_a_full_disk_during_fill_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINION_ENGINE", raising=False)
    monkeypatch.delenv("EXECO_PERSISTENCE_DIR", raising=False)
    assert queue.main(["fill", "0..9"]) == 0
    capsys.readouterr()

    def full(*args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    monkeypatch.setattr(os, "write", full)
    assert queue.main(["fill", "10..99999"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    # Every write fails here, the lock's own record included.
    assert out.err.startswith("minion-queue: error: sweep queue in sweeps: cannot write: "
                              "No space left on device")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert queue.main(["status", "--json"]) == 0
    assert '"total": 10' in capsys.readouterr().out
