"""The redis engine against a real redis-server, driven by real ``minionize`` processes.

The server is started by the ``redis_url`` fixture of tests/conftest.py on 127.0.0.1
(a free port, no persistence) and stopped by its PID. Each test uses its own stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from minionize.engines.redis.engine import RedisEngine
from tests.conftest import RECORD, RedisServer, kill_leftovers, records, task_env
from tests.conftest import start_task as start_minion
from tests.services import free_port, wait_for
from tests.services import script as script_path

pytestmark = pytest.mark.service("redis")



@pytest.fixture
def queue(redis_queue: RedisEngine) -> RedisEngine:
    """An engine on a fresh stream, as `minion-queue` would use it."""
    return redis_queue


def minion_env(queue: RedisEngine, tmp_path: Path, **extra: str) -> dict[str, str]:
    variables = {
        "MINION_ENGINE": "redis",
        "MINION_REDIS_URL": queue.client.url,
        "MINION_REDIS_STREAM": queue.client.stream,
        "MINION_IDLE_TIMEOUT": "1",
    }
    return task_env(tmp_path, **{**variables, **extra})


def test_two_minions_run_200_params_once_each(queue: RedisEngine, tmp_path: Path) -> None:
    queue.fill(range(200))
    env = minion_env(queue, tmp_path)
    script = f'{RECORD}; echo "$PPID" >> "$OUT.minions"; sleep 0.02'
    minions = [start_minion(env, tmp_path, script, "-j", "4") for _ in range(2)]
    for minion in minions:
        code, err = minion.finish()
        assert code == 0, err

    rows = records(tmp_path)
    assert sorted(int(p) for p, _, _ in rows) == list(range(200))  # each exactly once
    assert {attempt for _, attempt, _ in rows} == {1}
    assert len(set((tmp_path / "out.minions").read_text().split())) == 2  # both worked
    status = queue.status()
    assert (status["todo"], status["in_flight"], status["done"], status["dead"]) == (0, 0, 200, 0)


def test_failing_param_is_retried_then_dead_lettered(queue: RedisEngine, tmp_path: Path) -> None:
    queue.fill(["ok1", "bad", "ok2"])
    env = minion_env(queue, tmp_path, MINION_MAX_ATTEMPTS="3")
    code, err = start_minion(env, tmp_path, f'{RECORD}; test "$1" != bad').finish()

    assert code == 1, err  # a dead letter: exit 1
    rows = records(tmp_path)
    assert [a for p, a, _ in rows if p == "bad"] == [1, 2, 3]
    assert sorted(p for p, _, _ in rows if p != "bad") == ["ok1", "ok2"]
    dead = list(queue.list("dead"))
    assert len(dead) == 1
    assert dead[0]["param"] == "bad" and dead[0]["attempts"] == 3
    assert "exit" in dead[0]["reason"].lower() and "1" in dead[0]["reason"]
    assert queue.client.redis.xlen(f"{queue.client.stream}:dead") == 1
    status = queue.status()
    assert (status["todo"], status["in_flight"], status["done"], status["dead"]) == (0, 0, 2, 1)

    assert queue.requeue_dead() == 1  # replayable, attempts counted afresh
    (again,) = queue.take(1, 1)
    assert (again.param, again.attempt) == ("bad", 1)
    queue.release(again)


def test_task_longer_than_the_lease_is_not_run_twice(queue: RedisEngine, tmp_path: Path) -> None:
    queue.fill(["long"])
    env = minion_env(queue, tmp_path, MINION_LEASE="1", MINION_IDLE_TIMEOUT="2")
    first = start_minion(env, tmp_path, f"{RECORD}; sleep 3.5")
    wait_for(lambda: records(tmp_path), 20, "the first minion to start the task")
    second = start_minion(env, tmp_path, RECORD)  # idle, polling for expired leases
    code1, err1 = first.finish()
    code2, err2 = second.finish()

    assert (code1, code2) == (0, 0), err1 + err2
    assert [(p, a) for p, a, _ in records(tmp_path)] == [("long", 1)]  # 3.5 s > 3 leases
    assert "took over" not in err1 + err2
    status = queue.status()
    assert (status["done"], status["in_flight"], status["todo"]) == (1, 0, 0)


def test_sigkilled_minion_param_is_taken_over(queue: RedisEngine, tmp_path: Path) -> None:
    queue.fill(["victim"])
    env = minion_env(queue, tmp_path, MINION_LEASE="1", MINION_IDLE_TIMEOUT="3")
    # The first attempt hangs; the one after the takeover succeeds.
    script = f'{RECORD}; [ "$MINION_ATTEMPT" -gt 1 ] || exec sleep 60'
    first = start_minion(env, tmp_path, script)
    try:
        wait_for(lambda: records(tmp_path), 20, "the first minion to start the task")
        first.process.kill()
        first.process.wait()
        second = start_minion(env, tmp_path, script)
        code, err = second.finish()
    finally:
        kill_leftovers(records(tmp_path))

    assert code == 0, err
    assert [(p, a) for p, a, _ in records(tmp_path)] == [("victim", 1), ("victim", 2)]
    assert "took over" in err  # the takeover is said, not silent
    status = queue.status()
    assert (status["done"], status["in_flight"], status["todo"], status["dead"]) == (1, 0, 0, 0)


def test_sigterm_gives_the_param_back_at_once(queue: RedisEngine, tmp_path: Path) -> None:
    queue.fill(["stopped"])
    env = minion_env(queue, tmp_path, MINION_IDLE_TIMEOUT="30")  # default 300 s lease
    minion = start_minion(env, tmp_path, f"{RECORD}; exec sleep 60")
    try:
        wait_for(lambda: records(tmp_path), 20, "the minion to start the task")
        minion.process.send_signal(signal.SIGTERM)
        code, err = minion.finish(timeout=20)
    finally:
        kill_leftovers(records(tmp_path))

    assert code == 0, err
    status = queue.status()
    assert (status["todo"], status["in_flight"]) == (1, 0)
    (back,) = queue.take(1, 0.5)  # available now, not after the 300 s lease
    assert (back.param, back.attempt) == ("stopped", 1)  # the attempt was not counted
    queue.ack(back)


def test_undecodable_entry_is_dead_lettered_not_run(queue: RedisEngine, tmp_path: Path) -> None:
    queue.client.redis.xadd(queue.client.stream, {"param": "{not json"})
    queue.client.redis.xadd(queue.client.stream, {"other": "x"})
    queue.fill(["fine"])
    code, err = start_minion(minion_env(queue, tmp_path), tmp_path, RECORD).finish()

    assert code == 1, err
    assert [p for p, _, _ in records(tmp_path)] == ["fine"]
    reasons = sorted(d["reason"] for d in queue.list("dead"))
    assert "no 'param' field" in reasons[0]
    assert "not JSON" in reasons[1]


def test_unreachable_server_names_the_variable(tmp_path: Path) -> None:
    env = dict(os.environ, MINION_ENGINE="redis",
               MINION_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, err = start_minion(env, tmp_path, "true").finish(timeout=30)

    assert code == 2
    assert "MINION_REDIS_URL" in err and len(err.strip().splitlines()) == 1


def test_peek_and_reset_expired(queue: RedisEngine) -> None:
    queue.fill([{"x": 1}, [2, 3]])
    assert queue.peek(5) == [{"x": 1}, [2, 3]]
    short: Any = RedisEngine(url=queue.client.url, stream=queue.client.stream, lease=0.2)
    taken = short.take(1, 0.5)
    assert [d.param for d in taken] == [{"x": 1}]
    assert queue.peek(5) == [[2, 3]]  # what is in flight is not shown
    wait_for(lambda: short.status()["expired"] == 1, 5, "the lease to expire")
    assert short.reset_expired() == 1
    status = short.status()
    assert (status["todo"], status["in_flight"]) == (2, 0)
    short.close()


def test_minion_rides_out_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(port, tmp_path / "redis")
    try:
        queue = RedisEngine(url=server.url, stream="restart")
        queue.fill(["before"])
        env = minion_env(queue, tmp_path, MINION_IDLE_TIMEOUT="8")
        minion = start_minion(env, tmp_path, RECORD)
        wait_for(lambda: records(tmp_path), 20, "the minion to run the first param")
        server.stop()  # no persistence: the stream and its group are gone
        wait_for(lambda: "retrying" in minion.stderr.read_text(), 10, "the minion to notice")
        server.start()
        queue.fill(["after"])
        wait_for(lambda: len(records(tmp_path)) == 2, 20, "the param added after the restart")
        minion.process.send_signal(signal.SIGTERM)
        code, err = minion.finish(timeout=20)
        queue.close()
    finally:
        server.stop()

    assert code == 0, err
    assert [p for p, _, _ in records(tmp_path)] == ["before", "after"]
    assert "reachable again" in err


def test_a_server_restart_during_a_run_never_turns_a_success_into_a_dead_letter(
    tmp_path: Path,
) -> None:
    """Redis with AOF (appendfsync always) is SIGKILLed 1 s into a 2 s task and comes
    back 2.5 s later on the same port and directory: the ack must land after the
    restart, and the param must not be claimed again (by its own minion or another)."""
    server = RedisServer(free_port(), tmp_path / "redis", aof=True)
    try:
        queue = RedisEngine(url=server.url, stream="aof")
        queue.fill(["slow"])
        env = minion_env(queue, tmp_path, MINION_LEASE="2", MINION_MAX_ATTEMPTS="3",
                         MINION_IDLE_TIMEOUT="6")
        minion = start_minion(env, tmp_path, f"{RECORD}; sleep 2")
        wait_for(lambda: records(tmp_path), 20, "the task to start")
        time.sleep(1)  # the scenario: 1 s into the 2 s task
        server.kill()
        time.sleep(2.5)  # down for 2.5 s: the task ends and its ack fails meanwhile
        server.start()
        code, err = minion.finish(timeout=60)
        assert code == 0, err
        # The next minion finds nothing to run and dead-letters nothing.
        code2, err2 = start_minion(env, tmp_path, RECORD).finish(timeout=60)
        assert code2 == 0, err2
        status = queue.status()
        dead = list(queue.list("dead"))
        queue.close()
    finally:
        server.stop()

    assert [(p, a) for p, a, _ in records(tmp_path)] == [("slow", 1)], err + err2
    assert dead == [], dead
    assert (status["done"], status["dead"], status["todo"], status["in_flight"]) == (1, 0, 0, 0)
    assert "took over" not in err + err2


def test_two_restarts_mid_run_lose_no_success(tmp_path: Path) -> None:
    """Eight 1 s params on two minions, the AOF server SIGKILLed twice while they run:
    every param ends done, none is dead-lettered, none runs past its first attempt
    unless its own run was lost (never here: the tasks outlive the outages)."""
    server = RedisServer(free_port(), tmp_path / "redis", aof=True)
    try:
        queue = RedisEngine(url=server.url, stream="aof2")
        queue.fill([f"p{i}" for i in range(8)])
        env = minion_env(queue, tmp_path, MINION_LEASE="2", MINION_MAX_ATTEMPTS="3",
                         MINION_IDLE_TIMEOUT="6")
        minions = [start_minion(env, tmp_path, f"{RECORD}; sleep 1", "-j", "2")
                   for _ in range(2)]
        for _ in range(2):
            wait_for(lambda: len(records(tmp_path)) >= 2, 20, "tasks to start")
            time.sleep(0.5)
            server.kill()
            time.sleep(2.5)
            server.start()
        results = [m.finish(timeout=90) for m in minions]
        status = queue.status()
        dead = list(queue.list("dead"))
        queue.close()
    finally:
        server.stop()

    errs = "".join(e for _, e in results)
    assert [c for c, _ in results] == [0, 0], errs
    assert dead == [], dead
    assert sorted({p for p, _, _ in records(tmp_path)}) == [f"p{i}" for i in range(8)]
    assert {a for _, a, _ in records(tmp_path)} == {1}, records(tmp_path)
    assert (status["done"], status["dead"], status["todo"], status["in_flight"]) == (8, 0, 0, 0)


SECRET = "hunter2"


def credential_forms(port: int) -> list[str]:
    """Every way a Redis URL carries a secret, with the secret ``hunter2``."""
    return [
        f"redis://127.0.0.1:{port}/0?password={SECRET}",
        f"redis://:pre@{SECRET}at@127.0.0.1:{port}/0",  # a password holding '@'
        f"redis://user:{SECRET}@127.0.0.1:{port}/0",
        f"redis://:{SECRET}@127.0.0.1:{port}/0",
        f"redis://{SECRET}@127.0.0.1:{port}/0",  # a token given as the user name
        f"rediss://user:{SECRET}@127.0.0.1:{port}/0?ssl_cert_reqs=none",
    ]


@pytest.mark.parametrize("form", range(6))
def test_a_secret_in_the_url_is_never_printed(form: int, tmp_path: Path) -> None:
    url = credential_forms(free_port())[form]  # nothing listens there
    env = dict(os.environ, MINION_ENGINE="redis", MINION_REDIS_URL=url,
               MINION_OUTAGE_TIMEOUT="1", PYTHONUNBUFFERED="1")
    for command in ([script_path("minionize"), "true"],
                    [script_path("minion-queue"), "status"],
                    [script_path("minion-queue"), "fill", "1"]):
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert "MINION_REDIS_URL" in output, output
        assert SECRET not in output, output


def test_a_wrong_password_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path / "redis", password="right-one")
    try:
        url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        env = dict(os.environ, MINION_ENGINE="redis", MINION_REDIS_URL=url,
                   MINION_OUTAGE_TIMEOUT="1")
        for command in ([script_path("minionize"), "true"],
                        [script_path("minion-queue"), "status"]):
            done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=60)
            output = done.stdout + done.stderr
            assert done.returncode == 2, output
            assert "password" in output and "MINION_REDIS_URL" in output, output
            assert SECRET not in output, output
            assert len(done.stderr.strip().splitlines()) == 1, output
    finally:
        server.stop()
