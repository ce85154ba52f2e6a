"""The pure parts of the GNU parallel habits: progress lines, ETA, results names, tags."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from minionize import owners as _owner
from minionize.parallel.grouped_output import GroupedOutput, tag_of, tagged
from minionize.parallel.progress import Rate, duration_text, render
from minionize.parallel.results_dir import entry_name
from minionize.reporters.base import TaskReport


def test_duration_text() -> None:
    assert [duration_text(s) for s in (None, 0, 12.4, 185, 3725)] == [
        "?", "0s", "12s", "3m05s", "1h02m"]


def test_rate_follows_the_recent_pace_not_the_whole_run() -> None:
    rate = Rate(window=10)
    assert rate.add(0, 0) is None
    assert rate.add(5, 50) == 10  # 10/s
    for t in range(6, 40):
        last = rate.add(t, 50 + (t - 5))  # then 1/s
    assert last is not None and abs(last - 1.0) < 0.15


def test_render_every_mode_from_queue_counters() -> None:
    counts = {"todo": 50, "in_flight": 4, "expired": 0, "done": 40, "dead": 6, "total": 100}
    assert render("progress", counts, 2.0) == "46/100 done (6 dead), 4 running, 2.0/s"
    assert render("eta", counts, 2.0) == "46/100 done (6 dead), 4 running, 2.0/s, ETA 27s"
    assert render("bar", counts, 2.0) == (
        " 46% [#############-----------------] 46/100 ETA 27s")
    # An engine that cannot count (the file engine): this minion's counts, no total.
    assert render("eta", {"done": 3, "dead": 0}, None) == "3 done (0 dead), ?/s, ETA ?"
    finished = {"done": 6, "dead": 0, "total": 6, "in_flight": 0}
    assert render("eta", finished, 0.0).endswith("ETA 0s")


def test_results_entry_names_are_safe_and_never_shared() -> None:
    assert entry_name("12") == "12"
    assert entry_name("1700000000000-0") == "1700000000000-0"
    a, b = entry_name("a/b"), entry_name("a_b")
    assert a != b and "/" not in a and a.startswith("a_b-")
    assert entry_name("..") != ".."


def test_tags_like_parallel() -> None:
    assert tagged(b"x\ny\n", b"p") == b"p\tx\np\ty\n"
    assert tagged(b"no newline", b"p") == b"p\tno newline\n"
    assert tagged(b"", b"p") == b""
    assert tag_of({"x": 1}) == b'{"x":1}'
    assert tag_of("a\tb") == b"a\\tb"


def test_only_final_attempts_are_printed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, err = io.BytesIO(), io.BytesIO()
    printer = GroupedOutput(tag=True, stdout=out, stderr=err)  # type: ignore[arg-type]
    (tmp_path / "o").write_bytes(b"attempt\n")
    (tmp_path / "e").write_bytes(b"")
    for outcome in ("retry", "done"):
        printer.task_settled(TaskReport(param="p", param_id="1", attempt=1, outcome=outcome,
                                         start=0, duration=0, exit_code=0,
                                         stdout_path=str(tmp_path / "o"),
                                         stderr_path=str(tmp_path / "e")))
    assert out.getvalue() == b"p\tattempt\n"


def test_owner_tags_tell_a_live_owner_from_a_gone_or_reused_one(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert not _owner.is_gone(_owner.owner_tag())
    assert _owner.is_gone(_owner.owner_tag(ended.pid))
    # A pid alive now but started at another time: a later process reused it.
    me = os.getpid()
    assert _owner.is_gone(f"{_owner.host_hash()}.{me}.{_owner.process_start(me) + 1}")
    # Another host's owner, or no owner in the name: never gone from here.
    assert not _owner.is_gone(f"{_owner.host_hash('elsewhere')}.{ended.pid}.1")
    assert not _owner.is_gone("abc123")


def test_remove_stale_removes_only_dirs_whose_owner_is_gone(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    mine = _owner.make_owned_dir("minionize-x-", str(tmp_path))
    stale = tmp_path / f"minionize-x-{_owner.owner_tag(ended.pid)}-abcd"
    (stale / "sub").mkdir(parents=True)
    other_host = tmp_path / f"minionize-x-{_owner.host_hash('elsewhere')}.{ended.pid}.1-ab"
    old_style = tmp_path / "minionize-x-k2j3h4"
    other_host.mkdir()
    old_style.mkdir()
    assert _owner.remove_stale("minionize-x-", str(tmp_path)) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(mine).name, other_host.name, old_style.name])


def test_grouped_output_never_reads_through_a_link_nor_waits_on_a_fifo(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    (tmp_path / "1.out").symlink_to(secret)
    os.mkfifo(tmp_path / "1.err")
    out, err = io.BytesIO(), io.BytesIO()
    printer = GroupedOutput(stdout=out, stderr=err)
    printer.task_settled(TaskReport(param="p", param_id="1", attempt=1, outcome="done",
                                     start=0.0, duration=0.0, exit_code=0,
                                     stdout_path=str(tmp_path / "1.out"),
                                     stderr_path=str(tmp_path / "1.err")))
    assert out.getvalue() == err.getvalue() == b""
