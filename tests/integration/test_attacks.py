"""The attacks, bounded: what a cluster does to minions, on the sweep queue and Redis.

* A SIGKILL storm: 10,000 params, 4 minions, one killed every 2-3 s (sometimes with its
  whole process group) and replaced at once. Nothing is lost, extra runs stay within
  kills x tasks in flight, and the queue's final counters are exact.
* 16 minions on one queue: each param runs once, and the queue counts it once.
* SIGTERM, SIGINT and a second signal on a minion whose task has children and
  grandchildren: none is left behind, the param is back without an attempt counted, and
  the exit code is the documented one.

Each run is recorded by the task itself: one line appended to a file (O_APPEND, one
write per run). Figures are printed: run with ``-s`` to see them. ``MINION_STORM_PARAMS``
scales the storm down (default 10,000) and ``MINION_STORM_NAP`` sets how long each of
its tasks sleeps after recording (default 0.02 s, so that it lasts a dozen kills);
``MINION_CROWD_PARAMS`` scales the 16-minion run (default 2,000).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from minionize.engines.base import Engine
from minionize.engines.sweep.engine import SweepEngine
from tests.conftest import Minion, start_minion
from tests.services import wait_for

STORM_PARAMS = int(os.environ.get("MINION_STORM_PARAMS", "10000"))
CROWD_PARAMS = int(os.environ.get("MINION_CROWD_PARAMS", "2000"))
#: Tasks each minion runs at once (the bound on extra runs is kills x this).
CONCURRENCY = 2
#: The task: one line per run, one O_APPEND write (then a nap of $NAP seconds).
RECORD = ["sh", "-c", 'echo "$1" >> "$RUNS"; [ -z "$NAP" ] || sleep "$NAP"', "task"]
#: The storm's tasks nap this long, so that the storm lasts long enough for a dozen kills.
STORM_NAP = os.environ.get("MINION_STORM_NAP", "0.02")


@dataclass
class Queue:
    """One engine's queue for one attack: the environment of its minions, and an
    administration engine for the counters."""

    name: str
    env: dict[str, str]
    admin: Engine
    runs: Path
    #: Rebuild the administration engine (a fresh view of the counters).
    fresh: Callable[[], Engine]

    def status(self) -> dict[str, Any]:
        return dict(self.fresh().status())

    def recorded(self) -> collections.Counter[str]:
        if not self.runs.exists():
            return collections.Counter()
        return collections.Counter(self.runs.read_text().split())


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINION_", "EXECO_", "FILE_", "REPORTER_", "DRY", "GOOGLE_"))}
    env.update(RUNS=str(tmp_path / "runs.txt"), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(params=["sweep", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    env = clean_env(tmp_path)
    if request.param == "sweep":
        directory = str(tmp_path / "sweeps")
        env.update(MINION_ENGINE="sweep", EXECO_PERSISTENCE_DIR=directory, MINION_WAIT="1")

        def fresh() -> Engine:
            return SweepEngine(directory)

        admin = fresh()
        yield Queue("sweep", env, admin, tmp_path / "runs.txt", fresh)
        return
    from minionize.engines.redis.engine import RedisEngine

    url = request.getfixturevalue("redis_url")
    stream = f"attack-{uuid.uuid4().hex[:8]}"
    env.update(MINION_ENGINE="redis", MINION_REDIS_URL=url, MINION_REDIS_STREAM=stream,
               MINION_IDLE_TIMEOUT="3")
    engines: list[Engine] = []

    def fresh_redis() -> Engine:
        engine = RedisEngine(url=url, stream=stream, lease=2.0)
        engines.append(engine)
        return engine

    admin = fresh_redis()
    admin.open()
    try:
        yield Queue("redis", env, admin, tmp_path / "runs.txt", fresh_redis)
    finally:
        for engine in engines:
            engine.close()


def final_counters(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status[k] for k in ("todo", "in_flight", "expired", "done", "dead")}


# -- the SIGKILL storm ----------------------------------------------------------------------------


def test_sigkill_storm_loses_nothing(queue: Queue, tmp_path: Path) -> None:
    n = STORM_PARAMS
    assert queue.admin.fill(range(n)) == (n, 0)
    env = dict(queue.env, MINION_LEASE="2", MINION_CONCURRENCY=str(CONCURRENCY), NAP=STORM_NAP)
    rng = random.Random(11)
    minions = [start_minion(env, tmp_path, *RECORD) for _ in range(4)]
    kills = group_kills = 0
    started = time.monotonic()
    next_kill = started + rng.uniform(2, 3)
    try:
        while queue.status()["done"] < n:
            assert time.monotonic() - started < 150, (
                f"storm not drained: {queue.status()} after {kills} kills")
            if time.monotonic() >= next_kill:
                victim = minions.pop(rng.randrange(len(minions)))
                if rng.random() < 0.4:  # the job's whole process group, as a scheduler does
                    os.killpg(victim.pid, signal.SIGKILL)
                    group_kills += 1
                else:
                    os.kill(victim.pid, signal.SIGKILL)
                victim.process.wait()
                kills += 1
                minions.append(start_minion(env, tmp_path, *RECORD))
                next_kill = time.monotonic() + rng.uniform(2, 3)
            time.sleep(0.1)
        codes = [m.finish(timeout=60) for m in minions]
    finally:
        for minion in minions:
            if minion.process.poll() is None:
                minion.kill_group()
    seconds = time.monotonic() - started

    recorded = queue.recorded()
    lost = n - len(set(recorded) & {str(i) for i in range(n)})
    extra = sum(recorded.values()) - n + lost
    print(f"\n[storm {queue.name}] params {n}, minions 4 (-j {CONCURRENCY}), kills {kills} "
          f"({group_kills} with the process group), lost {lost}, extra runs {extra} "
          f"(bound {kills * CONCURRENCY}), seconds {seconds:.1f}")
    assert [c for c, _ in codes] == [0] * len(codes), [e for _, e in codes]
    assert lost == 0
    assert extra <= kills * CONCURRENCY
    assert final_counters(queue.status()) == {
        "todo": 0, "in_flight": 0, "expired": 0, "done": n, "dead": 0}


# -- a crowd on one queue -------------------------------------------------------------------------


def test_sixteen_minions_run_each_param_once(queue: Queue, tmp_path: Path) -> None:
    n = CROWD_PARAMS
    queue.admin.fill(range(n))
    started = time.monotonic()
    minions = [start_minion(queue.env, tmp_path, *RECORD) for _ in range(16)]
    codes = [m.finish(timeout=120) for m in minions]
    seconds = time.monotonic() - started
    recorded = queue.recorded()
    twice = sorted(p for p, c in recorded.items() if c > 1)
    print(f"\n[crowd {queue.name}] params {n}, minions 16, runs {sum(recorded.values())}, "
          f"run twice {len(twice)}, seconds {seconds:.1f}")
    assert [c for c, _ in codes] == [0] * 16, [e for _, e in codes]
    assert sorted(recorded) == sorted(str(i) for i in range(n))
    assert twice == []
    status = queue.status()
    assert final_counters(status) == {"todo": 0, "in_flight": 0, "expired": 0, "done": n,
                                      "dead": 0}
    assert status["total"] == n


# -- stop signals -----------------------------------------------------------------------------------

#: A task with a child and a grandchild, all long; with STUBBORN set, every one of them
#: ignores SIGTERM and SIGINT (so that only the hard stop, a second signal, ends them).
FAMILY = """\
[ -n "$STUBBORN" ] && trap '' TERM INT
echo "$1" >> "$RUNS"
sh -c 'sh -c "sleep 300" & sleep 300' &
sleep 300
"""


def marked(marker: str) -> list[int]:
    """PIDs of the processes whose environment holds ``marker`` (the minion's and its
    descendants': the environment is inherited)."""
    needle = f"ATTACK_MARK={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("signals", "stubborn", "code"),
    [
        ([signal.SIGTERM], False, 0),
        ([signal.SIGINT], False, 0),
        ([signal.SIGTERM, signal.SIGTERM], True, 143),
        ([signal.SIGINT, signal.SIGINT], True, 130),
    ],
    ids=["sigterm", "sigint", "second-sigterm", "second-sigint"],
)
def test_stop_signals_leave_no_process_and_give_the_param_back(
    queue: Queue, tmp_path: Path, signals: list[signal.Signals], stubborn: bool, code: int
) -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to find the task's descendants")
    queue.admin.fill(["family"])
    marker = uuid.uuid4().hex
    env = dict(queue.env, ATTACK_MARK=marker, MINION_GRACE_PERIOD="30",
               MINION_IDLE_TIMEOUT="60")
    if stubborn:
        env["STUBBORN"] = "1"
    family = tmp_path / "family.sh"
    family.write_text(FAMILY)
    minion: Minion = start_minion(env, tmp_path, "sh", str(family))
    try:
        # The minion, its task, the child and the grandchild (and their sleeps).
        wait_for(lambda: queue.recorded() and len(marked(marker)) >= 6, 30,
                 "the task, its child and its grandchild to start")
        started = time.monotonic()
        for sent in signals:
            minion.process.send_signal(sent)
            time.sleep(0.3)  # the second signal comes while the first stop is under way
        exit_code, err = minion.finish(timeout=40)
        wait_for(lambda: marked(marker) == [], 10, "every process of the minion to end")
        seconds = time.monotonic() - started
    finally:
        for pid in marked(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if minion.process.poll() is None:
            minion.kill_group()
    print(f"\n[stop {queue.name}] signals {[s.name for s in signals]}: exit {exit_code}, "
          f"all processes gone within {seconds:.1f}s")
    assert exit_code == code, err
    status = queue.status()
    assert (status["todo"], status["in_flight"], status["done"], status["dead"]) == (1, 0, 0, 0)
    taker = queue.fresh()
    try:
        (back,) = taker.take(1, 2)
        assert (back.param, back.attempt) == ("family", 1)  # the stop counted no attempt
        taker.release(back)
    finally:
        taker.close()
