"""The sweep queue's results, piece by piece: the line format, the bitmap in the state
and the snapshot, reading ``results.jsonl``, and which ack stores a result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from minionize.engines.sweep.engine import SweepEngine
from minionize.engines.sweep.results import ResultBits, ResultsFile, result_line
from minionize.engines.sweep.state import DONE, QueueState, from_snapshot, to_snapshot
from minionize.task_result import decode_result


def engine(path: Path) -> SweepEngine:
    e = SweepEngine(str(path))
    e.create()
    e.open()
    return e


def read_back(path: Path, n: int) -> list[object]:
    """The value of each param's last complete line (None: no line)."""
    lines = ResultsFile(str(path)).open()
    try:
        starts, lengths = lines.index(n)
        return [decode_result(lines.text(s, ln)) if s >= 0 else None
                for s, ln in zip(starts, lengths)]
    finally:
        lines.close()


@pytest.mark.parametrize("text", [
    '{"a": [1, 2],\n "b": "x"}',           # pretty-printed: newlines between tokens
    json.dumps("\ud800 lone", ensure_ascii=False),  # a lone surrogate
    json.dumps("é\u2028\n\t", ensure_ascii=False),   # a line separator, an escaped newline
    "null", "1e400", "-0.0",
])
def test_a_line_holds_one_result_whose_value_reads_back_the_same(tmp_path: Path, text: str) -> None:
    line = result_line(7, text)
    assert line.count(b"\n") == 1 and line.endswith(b"}\n")
    (tmp_path / "results.jsonl").write_bytes(line)
    assert read_back(tmp_path, 8)[7] == json.loads(text)


def test_the_last_complete_line_of_a_param_counts(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_bytes(
        result_line(0, '"first"') + b"garbage\n" + result_line(9, '"out of range"')
        + result_line(0, '"second"') + result_line(1, '"one"') + b'{"i":2,"r":"to'
    )
    assert read_back(tmp_path, 3) == ["second", "one", None]


def test_lines_written_after_the_lock_was_let_go_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(result_line(0, "1"))
    lines = ResultsFile(str(tmp_path)).open()
    with open(path, "ab") as f:
        f.write(result_line(0, "2") + result_line(1, "3"))
    try:
        starts, lengths = lines.index(2)
        assert list(starts)[1] == -1 and lines.text(starts[0], lengths[0]) == "1"
    finally:
        lines.close()


def test_a_writer_cuts_a_torn_last_line_first(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(result_line(0, '"kept"') + b'{"i":1,"r":"torn')
    ResultsFile(str(tmp_path)).append(result_line(1, '"new"'), lambda: None, durable=False)
    assert path.read_bytes() == result_line(0, '"kept"') + result_line(1, '"new"')


def test_a_writer_that_meets_an_error_takes_back_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from minionize.engines.sweep import results as _sweep_results

    path = tmp_path / "results.jsonl"
    path.write_bytes(result_line(0, "1"))
    real = _sweep_results.write_all

    def half(fd: int, data: bytes, offset: int) -> None:
        real(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_sweep_results, "write_all", half)
    with pytest.raises(OSError):
        ResultsFile(str(tmp_path)).append(result_line(1, '"x"' * 100), lambda: None, False)
    assert path.read_bytes() == result_line(0, "1")


def test_the_bitmap_keeps_any_set_of_params_and_its_snapshot_text_is_small() -> None:
    bits = ResultBits()
    wanted = {0, 7, 8, 1000, 999_999}
    for index in [*wanted, 5]:
        bits.add(index)
    bits.discard(5)
    bits.discard(10**9)  # never added: nothing happens
    assert list(bits) == sorted(wanted) and len(bits) == len(wanted)
    assert 8 in bits and 9 not in bits and 10**9 not in bits
    assert set(ResultBits.from_text(bits.to_text())) == wanted
    every = ResultBits()
    for index in range(1_000_000):
        every.add(index)
    assert len(every.to_text()) <= 1_000_000 // 6 + 4
    assert ResultBits().to_text() == ""
    with pytest.raises(ValueError):
        ResultBits.from_text("not base64!")


def test_an_ack_that_stored_a_result_marks_it_in_the_state_and_the_snapshot() -> None:
    state = QueueState()
    state.apply({"o": "add", "n": 3})
    state.apply({"o": "claim", "w": "m", "e": 1e12, "l": [[0, 0], [1, 1], [2, 2]]})
    state.apply({"o": "ack", "i": 0, "w": "m", "q": 0, "r": 1})
    state.apply({"o": "ack", "i": 1, "w": "m", "q": 1})
    state.apply({"o": "ack", "i": 1, "w": "late", "q": 9, "r": 1})  # done already: no result
    assert list(state.results) == [0]
    doc = to_snapshot(state)
    again = from_snapshot(json.loads(json.dumps(doc)))
    assert list(again.results) == [0] and again.status[0] == DONE
    del doc["results"]  # a snapshot of an older minionize
    assert list(from_snapshot(doc).results) == []


def test_only_the_ack_that_makes_its_param_done_stores_a_result(tmp_path: Path) -> None:
    e = engine(tmp_path / "q")
    e.fill(["a", "b", "c"])
    e.take(3, 0.0)
    store = e.store
    with store.locked():
        store.settle("ack", 2, e.owner.minion, 2)  # c is done already
        stored = store.store_results([
            (0, result_line(0, '"a1"')), (0, result_line(0, '"a2"')),  # twice in a batch
            (1, None), (2, result_line(2, '"c"')),
        ])
    assert stored == {0}
    assert (tmp_path / "q" / "results.jsonl").read_bytes() == result_line(0, '"a1"')


def test_results_go_to_one_file_and_the_journal_only_says_one_was_stored(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.fill(range(50))
    for d in e.take(50, 0.0):
        e.ack(d, json.dumps({"big": "x" * 1000, "p": d.param}))
    e.flush()
    assert sorted(os.listdir(q)) == ["journal.0.jsonl", "params.jsonl", "queue.lock", "results.jsonl"]
    acks = [json.loads(line) for line in (q / "journal.0.jsonl").read_text().splitlines()
            if '"o":"ack"' in line]
    assert len(acks) == 50 and all(a["r"] == 1 for a in acks)
    assert (q / "journal.0.jsonl").stat().st_size < 10_000
    assert [r["result"]["p"] for r in e.results()] == list(range(50))


def test_which_params_have_a_result_survives_compaction_and_a_reopen(tmp_path: Path) -> None:
    q = tmp_path / "q"
    e = engine(q)
    e.store.replica.compaction.threshold(2000)
    e.fill(range(300))
    while True:
        batch = e.take(10, 0.0)
        if not batch:
            break
        for d in batch:
            e.ack(d, None if d.param % 3 else json.dumps([d.param]))
    e.flush()
    snapshot = json.loads((q / "snapshot.json").read_text())
    assert snapshot["results"] and len(snapshot["results"]) < 60
    rows = list(SweepEngine(str(q)).results())
    assert [r["result"] for r in rows] == [None if p % 3 else [p] for p in range(300)]


def test_durable_settles_fsync_the_results_before_the_acks_that_point_at_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = tmp_path / "q"
    e = SweepEngine(str(q), durable_settles=True)
    e.create()
    e.open()
    e.fill(["a"])
    (a,) = e.take(1, 0.0)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    e.ack(a, '"kept"')
    e.flush()
    assert synced[:2] == ["results.jsonl", "journal.0.jsonl"]
