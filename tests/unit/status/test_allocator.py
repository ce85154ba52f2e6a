"""The allocator's last decision beside the reports: written whole, read back, shown in
one line by ``minion-status`` (text and JSON) and ``mtop``, nothing without it."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from minionize.reporters.queue_ref import ref_label
from minionize.status.allocator import (
    DECISION_FILE,
    AllocDecision,
    decision_for,
    read_decision,
    write_decision,
)
from minionize.status.read import read_status
from minionize.status.text import format_status

DECISION = AllocDecision(
    t=1_700_000_000.0, queue="sweep queue /q", name="minions-ab", scheduler="SLURM",
    target=4, live=1, pending=3, backlog=96, in_flight=1, act="submit nothing",
    why="backlog 96 / 1 per minion, capped by --max-minions 4: enough minions")
LINE = ("target 4, live 1, pending 3, backlog 96, in flight 1: submit nothing "
        "(backlog 96 / 1 per minion, capped by --max-minions 4: enough minions)")


def test_written_by_rename_and_read_back(tmp_path: Path) -> None:
    write_decision(tmp_path, DECISION)
    write_decision(tmp_path, replace(DECISION, act="submit 2"))
    assert [p.name for p in tmp_path.iterdir()] == [DECISION_FILE]
    assert read_decision(tmp_path) == replace(DECISION, act="submit 2")
    assert DECISION.line() == LINE


def test_no_file_or_a_damaged_one_is_no_decision(tmp_path: Path) -> None:
    assert read_decision(tmp_path) is None
    path = tmp_path / DECISION_FILE
    for text in ("{", "[]", '{"t": 1}', json.dumps({**DECISION.to_json(), "live": "2"}),
                 json.dumps({**DECISION.to_json(), "t": 1e300})):
        path.write_text(text)
        assert read_decision(tmp_path) is None, text


def test_only_the_decision_for_the_queue_of_the_reports(tmp_path: Path) -> None:
    write_decision(tmp_path, DECISION)
    ours = {"engine": "sweep", "location": "/q"}
    assert ref_label(ours) == DECISION.queue
    assert decision_for(tmp_path, []) == DECISION
    assert decision_for(tmp_path, [None, ours]) == DECISION
    assert decision_for(tmp_path, [{"engine": "sweep", "location": "/other"}]) is None


def test_status_text_and_json_show_one_line(tmp_path: Path) -> None:
    status = read_status(tmp_path, now=DECISION.t + 30)
    assert status.allocator is None and status.to_json()["allocator"] is None
    assert "allocator" not in format_status(status)
    write_decision(tmp_path, DECISION)
    status = read_status(tmp_path, now=DECISION.t + 30)
    assert status.to_json()["allocator"] == DECISION.to_json()
    lines = [line for line in format_status(status).splitlines() if "allocator" in line]
    assert len(lines) == 1
    assert lines[0].startswith("allocator at ")
    assert lines[0].endswith(f"(30 s ago), jobs minions-ab on SLURM: {LINE}")


def test_mtop_shows_the_line(tmp_path: Path) -> None:
    from rich.console import Console

    from minionize.status.tui import render

    console = Console(file=io.StringIO(), width=400)
    console.print(render(read_status(tmp_path, now=DECISION.t)))
    assert "allocator" not in console.file.getvalue()  # type: ignore[attr-defined]
    write_decision(tmp_path, DECISION)
    console = Console(file=io.StringIO(), width=400)
    console.print(render(read_status(tmp_path, now=DECISION.t + 5)))
    assert f"(5.0 s ago), jobs minions-ab on SLURM: {LINE}" in \
        console.file.getvalue()  # type: ignore[attr-defined]
