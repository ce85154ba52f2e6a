"""Leftover run directories: who owns one, and when it may be removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from minionize.pool.cleanup import OWNER, disown, owner_gone, owner_record, process_start, remove_stale
from minionize.pool.progress import format_line


def _rundir(parent: Path, name: str, owner: object) -> Path:
    rundir = parent / f"minionize-pool-{name}"
    rundir.mkdir(mode=0o700)
    (rundir / OWNER).write_text(json.dumps(owner))
    return rundir


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_owner_is_gone_when_its_process_ended_or_its_pid_was_used_again() -> None:
    me = owner_record()
    assert me["host"] == socket.gethostname() and me["pid"] == os.getpid()
    assert me["start"] == process_start(os.getpid()) and me["start"] > 0
    assert not owner_gone(me)
    assert owner_gone({**me, "pid": _ended_pid()})
    assert owner_gone({**me, "start": str(int(me["start"]) + 1)})  # the pid, another process
    assert not owner_gone({**me, "start": None})  # no start time: alive is alive
    assert not owner_gone({**me, "host": me["host"] + "-other", "pid": _ended_pid()})
    assert not owner_gone({"host": me["host"], "pid": "1"})


def test_only_run_directories_of_gone_owners_are_removed(tmp_path: Path) -> None:
    me = owner_record()
    gone = _rundir(tmp_path, "gone", {**me, "pid": _ended_pid()})
    living = _rundir(tmp_path, "living", me)
    elsewhere = _rundir(tmp_path, "elsewhere", {**me, "host": "other", "pid": _ended_pid()})
    kept = _rundir(tmp_path, "kept", {**me, "pid": _ended_pid()})
    disown(str(kept))
    garbage = _rundir(tmp_path, "garbage", ["not", "an", "owner"])
    mine = tmp_path / "results-gone"  # not a run directory's name
    mine.mkdir()
    (mine / OWNER).write_text(json.dumps({**me, "pid": _ended_pid()}))
    link = tmp_path / "minionize-pool-link"
    link.symlink_to(gone)
    assert remove_stale(str(tmp_path)) == [str(gone)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (living, elsewhere, kept, garbage, mine, link))
    assert remove_stale(str(tmp_path / "nosuch")) == []


def test_the_progress_line_of_an_input_of_unknown_length() -> None:
    assert format_line(5, None, 2, 0, 1, 1.0) == (
        "pool: 5/? items, 2 worker(s) alive, 0 lost, 1 failed, 5.0 items/s, ETA ?")
    assert format_line(5, 10, 2, 0, 0, 1.0).endswith("5.0 items/s, ETA 1s")
