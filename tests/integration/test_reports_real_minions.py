"""Real minions on a sweep queue, some params failing, one minion SIGKILLed: then
`minion-status --json` must tell exactly what happened. The killed minion held a param:
its lease ends at once (its process is gone, on this host), another minion runs it, and
the killed one then holds nothing, whatever its report last said."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from minionize.engines.sweep.engine import SweepEngine
from tests.conftest import Minion, start_minion, status_json
from tests.services import script, wait_for

TASK = """\
case "$1" in
  hang) if [ "$MINION_ATTEMPT" = 1 ]; then echo $$ > hang.pid; exec sleep 600; fi
        echo "ran $1 again";;
  bad-*) echo "Traceback (most recent call last):" >&2
         echo "ValueError: $1 exploded" >&2; exit 4;;
  *) echo "ran $1";;
esac
"""
OK = [f"ok-{i}" for i in range(40)]
BAD = ["bad-1", "bad-2", "bad-3"]


def start(tmp_path: Path, env: dict[str, str], concurrency: int) -> Minion:
    return start_minion(env, tmp_path, "--concurrency", str(concurrency), "sh", "task.sh")


def test_status_tells_what_real_minions_did(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    Path("task.sh").write_text(TASK)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINION_", "FILE_", "EXECO_", "REPORTER_", "DRY"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               MINION_ENGINE="sweep", EXECO_PERSISTENCE_DIR="sweeps", MINION_REPORTER="json",
               MINION_LOG_DIR="logs", MINION_MAX_ATTEMPTS="2", MINION_HEARTBEAT="0.5")
    SweepEngine("sweeps").fill(["hang"])
    victim = start(tmp_path, env, 1)
    minions = [victim]
    try:
        def victim_runs_hang() -> bool:
            out = status_json(env, "--no-queue")
            return [r["param"] for m in out["minions"] for r in m["running"]] == ["hang"]

        wait_for(victim_runs_hang, 30, "the first minion to report its running param")
        SweepEngine("sweeps").fill(OK + BAD)
        workers = [start(tmp_path, env, 2), start(tmp_path, env, 2)]
        minions += workers
        victim.kill_group()  # no stop line, no flush: what a lost node does
        codes = {}
        for worker in workers:
            code, err = worker.finish(60)
            assert code in (0, 1), err
            codes[worker.pid] = code
        # Which worker ran a bad param's last attempt depends on scheduling; the one
        # that dead-lettered exits 1.
        assert 1 in codes.values()

        before = status_json(env)
        assert [m["state"] for m in before["minions"]].count("finished") == 2
        wait_for(lambda: status_json(env, "--lost-after", "3")["lost"] == 1, 20,
                 "the killed minion to count as lost")
        out = status_json(env, "--lost-after", "3")
    finally:
        for minion in minions:
            if minion.process.poll() is None:
                minion.kill_group()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path("hang.pid").read_text()), signal.SIGKILL)

    assert (out["done"], out["dead"], out["failed"]) == (41, 3, 6)
    # Its report says the lost minion ran "hang"; the queue says it was run since.
    assert (out["running"], out["stranded"], out["released"]) == (0, 0, 0)
    assert (out["alive"], out["finished"], out["lost"]) == (0, 2, 1)
    by_state: dict[str, list[dict[str, Any]]] = {}
    for minion in out["minions"]:
        by_state.setdefault(minion["state"], []).append(minion)
    lost = by_state["lost"][0]
    assert lost["pid"] == victim.pid and lost["done"] == 0 and lost["exit_code"] is None
    assert lost["running"] == [] and lost["in_progress"] == 0
    assert status_json(env, "--lost-after", "3", "--no-queue")["stranded"] == 1  # its report
    assert sorted(m["pid"] for m in by_state["finished"]) == sorted(w.pid for w in workers)
    assert all(m["exit_code"] == codes[m["pid"]] for m in by_state["finished"])
    assert sum(m["done"] for m in by_state["finished"]) == 41

    # The queue agrees, and the last errors say why, with the log of each last attempt.
    assert out["queue"]["done"] == 41 and out["queue"]["dead"] == 3
    assert out["remaining"] == 0
    errors = {e["param"]: e for e in out["errors"]}
    assert sorted(errors) == BAD
    for param, error in errors.items():
        assert error["outcome"] == "dead" and error["attempt"] == 2 and error["exit_code"] == 4
        assert error["stderr_tail"].splitlines()[-1] == f"ValueError: {param} exploded"
        assert f"ValueError: {param} exploded" in Path(error["stderr_path"]).read_text()

    text = subprocess.run([script("minion-status"), "--lost-after", "3"], env=env, text=True,
                          capture_output=True, timeout=30).stdout
    assert "3 minions: 0 alive, 2 finished, 1 lost" in text
    assert "held by lost minions" not in text
    assert "| ValueError: bad-3 exploded" in text
    assert "0 to do, 0 in flight, 0 expired, 41 done, 3 dead" in text
