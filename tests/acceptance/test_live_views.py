"""The live views in a real terminal (tmux, 80 x 24): ``minionize --bar`` beside tasks
that write to the terminal, and ``mtop`` on a report directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import sh, user_environment
from tests.services import script, wait_for

Tmux = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (tests/run.sh installs it)")
    socket = f"minion-live-test-{uuid.uuid4().hex[:8]}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", socket, *args], text=True,
                              capture_output=True, timeout=20)

    yield run
    run("kill-server")


def start(tmux: Tmux, command: str, cwd: Path) -> Callable[[], str]:
    """Run ``command`` (a shell line, in ``cwd``) in an 80 x 24 terminal; the screen's text."""
    env = user_environment()
    exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items()
                       if k in ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH"))
    line = f"cd {_quote(str(cwd))} && export {exports} TERM=xterm && {command}; sleep 600"
    started = tmux("new-session", "-d", "-s", "view", "-x", "80", "-y", "24", line)
    assert started.returncode == 0, started.stderr

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "view").stdout

    return screen


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


BAR = re.compile(r"\d+% \[[#-]+\] \d+/\d+ ETA")


def test_the_bar_is_never_on_a_line_of_a_task(tmp_path: Path, tmux: Tmux) -> None:
    """Issue 22 item 13: `0% [------] 0/6 ETA ?sim: start n=3` was on the screen."""
    (tmp_path / "sim.sh").write_text(
        'echo "sim: start n=$1" >&2\nsleep 0.7\necho "sim: end n=$1"\n'
    )
    env = user_environment()
    assert sh(f"cd {tmp_path} && minion-queue fill 1..6", env).returncode == 0
    screen = start(tmux, "minionize --bar sh sim.sh; echo bar-exit=$?", tmp_path)
    seen: list[str] = []

    def drawn_beside_tasks() -> bool:
        text = screen()
        seen.append(text)
        return bool(BAR.search(text)) and "sim: start n=2" in text

    wait_for(drawn_beside_tasks, 30, "the bar drawn while tasks write to the terminal")
    def ended() -> bool:
        seen.append(screen())
        return "bar-exit=0" in seen[-1]

    wait_for(ended, 60, "the minion to end")
    for text in seen:
        for row in text.splitlines():
            assert not (BAR.search(row) and "sim:" in row), text
    final = seen[-1].splitlines()
    for n in range(1, 7):
        assert f"sim: start n={n}" in final and f"sim: end n={n}" in final, seen[-1]
    bars = [row for row in final if BAR.search(row)]
    assert len(bars) == 1 and bars[0].startswith("100% [") and " 6/6 " in bars[0], seen[-1]
    assert final.index(bars[0]) == final.index("bar-exit=0") - 1, seen[-1]


def test_mtop_fits_80_columns_and_counts_params_once(tmp_path: Path, tmux: Tmux) -> None:
    """Issue 22 item 13: mtop showed `4/24` beside `done 8`, its title wrapped at 80
    columns, and said "1 params"."""
    work = tmp_path / ("a-long-directory-name-for-the-title-" + "x" * 40)
    work.mkdir()
    env = user_environment()
    env.update(MINION_REPORTER="json", MINION_HEARTBEAT="1")
    # An earlier run of 3 params in the same report directory, then a queue of 2.
    assert sh(f"cd {work} && minion-queue fill 1..3 && minionize true", env).returncode == 0
    shutil.rmtree(work / "sweeps")
    assert sh(f"cd {work} && minion-queue fill 0 60", env).returncode == 0
    minion = subprocess.Popen([script("minionize"), "-j", "1", "sleep"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        screen = start(tmux, script("mtop"), work)
        # The 60 s param runs (a heartbeat lists it) beside a high rate of short ones.
        wait_for(lambda: re.search(r"alive +1 +0 +0 +1 +\d", screen()), 30,
                 "mtop to show the running param")
        wait_for(lambda: "1 param left" in screen(), 30, "mtop to show one param left")
        text = screen()
        rows = text.splitlines()
        assert rows[0].startswith("mtop ") and "(q quits)" not in rows[1], text
        assert all(len(row) <= 80 for row in rows), text
        progress = next(row for row in rows if "params finished" in row)
        assert " 1/2 params finished (50.0 %)" in progress, text
        totals = next(row for row in rows if row.lstrip().startswith("done "))
        assert totals.lstrip().startswith("done 1 ") and "4 done attempts in the reports" in text
        assert "1 params" not in text
        # Not a promise of its end in under a second, as the rate alone gave.
        eta = next(row for row in rows if row.startswith("ETA "))
        assert eta.startswith("ETA unknown: 1 param left, all running"), text
        tmux("send-keys", "-t", "view", "q")
    finally:
        minion.terminate()
        minion.wait(timeout=30)
    assert os.path.isdir(work / "minion-report")
