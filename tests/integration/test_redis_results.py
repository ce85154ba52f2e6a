"""The redis engine keeps what a function task returned, with its ack, against a real
redis-server (the ``redis_url`` fixture of tests/conftest.py): a minion SIGKILLed in
the middle of its tasks and a new one started leave every param done once, with its
result; a minion that lost its lease cannot replace the result of the one that owns
the param; results come back in fill order, a page at a time, however large.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from minionize.engines.redis import admin as _redis_admin
from minionize.engines.redis.engine import RedisEngine
from minionize.errors import EngineError
from tests.conftest import Minion, user_environment
from tests.services import script, wait_for

pytestmark = pytest.mark.service("redis")

#: A minion serving a Python function. It records "param pid" in $OUT as each call
#: starts; the first call on param 7 then hangs (the test kills the minion there).
WORK = '''
import os, time
import minionize

OUT = os.environ["OUT"]

@minionize.task
def work(param):
    with open(OUT, "a") as out:
        out.write(f"{param} {os.getpid()}\\n")
    if param == 7 and not os.path.exists(OUT + ".hung"):
        open(OUT + ".hung", "w").close()
        time.sleep(120)
    time.sleep(0.05)
    return {"param": param, "square": param * param, "text": "é" * param}

raise SystemExit(work.run())
'''


def expected(param: int) -> dict[str, Any]:
    return {"param": param, "square": param * param, "text": "é" * param}


def start_function_minion(queue: RedisEngine, tmp_path: Path, **extra: str) -> Minion:
    """``python work.py`` (the function minion above) in a new session."""
    program = tmp_path / "work.py"
    program.write_text(WORK)
    env = dict(user_environment(), MINION_ENGINE="redis", MINION_REDIS_URL=queue.client.url,
               MINION_REDIS_STREAM=queue.client.stream, OUT=str(tmp_path / "out"), **extra)
    err = tmp_path / f"minion-{uuid.uuid4().hex[:8]}.err"
    with open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(program)], env=env, cwd=tmp_path,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr, start_new_session=True)
    return Minion(process, err)


def started(tmp_path: Path) -> list[int]:
    """The params whose call started, in order, once per start."""
    out = tmp_path / "out"
    return [int(line.split()[0]) for line in out.read_text().splitlines()] if out.exists() else []


def queue_results(queue: RedisEngine) -> list[dict[str, Any]]:
    """``minion-queue results --json`` on the queue, parsed."""
    env = dict(user_environment(), MINION_ENGINE="redis", MINION_REDIS_URL=queue.client.url,
               MINION_REDIS_STREAM=queue.client.stream)
    done = subprocess.run([script("minion-queue"), "results", "--json"], env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_minion_killed_mid_run_and_restarted_leaves_every_result_once(
    redis_queue: RedisEngine, tmp_path: Path
) -> None:
    redis_queue.fill(range(20))
    first = start_function_minion(redis_queue, tmp_path, MINION_CONCURRENCY="2", MINION_LEASE="2")
    try:
        wait_for(lambda: 7 in started(tmp_path) and redis_queue.status()["done"] >= 5, 60,
                 "param 7 to hang after 5 params were done")
    finally:
        first.kill_group()  # SIGKILL: the minion and its function's worker processes
    done_before = redis_queue.status()["done"]
    assert done_before < 20

    second = start_function_minion(redis_queue, tmp_path, MINION_CONCURRENCY="2", MINION_LEASE="2",
                                   MINION_IDLE_TIMEOUT="6")
    code, err = second.finish(120)
    assert code == 0, err
    assert "took over" in err  # what the killed minion ran came back when its lease expired

    rows = queue_results(redis_queue)
    assert [row["param"] for row in rows] == list(range(20))  # each once, in fill order
    assert [row["result"] for row in rows] == [expected(p) for p in range(20)]
    assert len({row["id"] for row in rows}) == 20
    assert started(tmp_path).count(7) == 2  # killed during its first run, done by the second
    status = redis_queue.status()
    assert (status["todo"], status["in_flight"], status["done"], status["dead"]) == (0, 0, 20, 0)


def test_a_late_ack_after_a_lost_lease_does_not_replace_the_owners_result(
    redis_queue: RedisEngine,
) -> None:
    redis_queue.fill(["p"])
    slow = RedisEngine(url=redis_queue.client.url, stream=redis_queue.client.stream, lease=0.5)
    owner = RedisEngine(url=redis_queue.client.url, stream=redis_queue.client.stream, lease=0.5)
    for engine in (slow, owner):
        engine.open()
    try:
        (lost,) = slow.take(1, 1)
        taken: list[Any] = []
        wait_for(lambda: taken.extend(owner.take(1, 0.2)) or taken, 10,
                 "the owner to take over the expired lease")
        (again,) = taken
        assert (again.id, again.attempt) == (lost.id, 2)
        owner.ack(again, '"owner"')
        slow.ack(lost, '"late"')
    finally:
        slow.close()
        owner.close()
    assert [(row["param"], row["result"]) for row in redis_queue.results()] == [("p", "owner")]
    assert redis_queue.status()["done"] == 1


def test_results_keep_the_fill_order_through_retries_dead_letters_and_expired_leases(
    redis_queue: RedisEngine,
) -> None:
    redis_queue.fill(["dead", "expired", "released"])
    redis_queue.client.redis.xadd(redis_queue.client.stream, {"param": '"added by XADD"'})  # another producer
    redis_queue.fill(["plain"])
    minion = RedisEngine(url=redis_queue.client.url, stream=redis_queue.client.stream, lease=0.5)
    minion.open()
    try:
        taken = {d.param: d for d in minion.take(5, 1)}
        minion.dead_letter(taken["dead"], "exit code 1")
        minion.release(taken["released"])
        minion.ack(taken["plain"], '"plain"')
        minion.ack(taken["added by XADD"], "1")
        # minion-queue reset-expired, with the minion's lease:
        wait_for(lambda: minion.reset_expired() == 1, 10, "the lease of 'expired' to expire")
        assert redis_queue.requeue_dead() == 1
        for delivery in minion.take(5, 1):
            minion.ack(delivery, json.dumps(delivery.param))
    finally:
        minion.close()
    rows = list(redis_queue.results())
    assert [row["param"] for row in rows] == [
        "dead", "expired", "released", "added by XADD", "plain"]
    assert [row["result"] for row in rows] == ["dead", "expired", "released", 1, "plain"]


def test_results_come_back_a_page_at_a_time_whatever_their_size(
    redis_queue: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = _redis_admin.PAGE + 7
    redis_queue.fill(range(count))
    minion = RedisEngine(url=redis_queue.client.url, stream=redis_queue.client.stream)
    minion.open()
    big = "x" * (5 << 20)
    try:
        taken = []
        while len(taken) < count:
            taken += minion.take(count - len(taken), 1)
        for delivery in reversed(taken):
            value = big if delivery.param in (3, 4) else delivery.param
            minion.ack(delivery, json.dumps(value))
    finally:
        minion.close()
    pages = []
    script_of = redis_queue.client.redis.register_script

    def counting(text: str) -> Any:
        script = script_of(text)

        def call(**kwargs: Any) -> Any:
            reply = script(**kwargs)
            pages.append(len(reply) // 2)
            return reply

        return call

    monkeypatch.setattr(redis_queue.client.redis, "register_script", counting)
    rows = list(redis_queue.results())
    assert [row["param"] for row in rows] == list(range(count))
    assert [row["result"] for row in rows] == [big if p in (3, 4) else p for p in range(count)]
    assert max(pages) <= _redis_admin.PAGE and pages[:3] == [4, 1, _redis_admin.PAGE]


def done_with_results(queue: RedisEngine, params: list[Any]) -> None:
    """Fill ``params`` and ack each with the result ``[param]``."""
    queue.fill(params)
    minion = RedisEngine(url=queue.client.url, stream=queue.client.stream)
    minion.open()
    try:
        taken: list[Any] = []
        while len(taken) < len(params):
            taken += minion.take(len(params) - len(taken), 1)
        for delivery in taken:
            minion.ack(delivery, json.dumps([delivery.param]))
    finally:
        minion.close()


def queue_results_error(queue: RedisEngine, *args: str) -> str:
    """``minion-queue results ARGS`` must fail with exit 2 and one line: that line."""
    env = dict(user_environment(), MINION_ENGINE="redis", MINION_REDIS_URL=queue.client.url,
               MINION_REDIS_STREAM=queue.client.stream)
    done = subprocess.run([script("minion-queue"), "results", *args], env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


@pytest.mark.parametrize("loss", ["one entry", "the hash", "the order"])
def test_results_deleted_are_an_error_naming_what_is_missing(
    redis_queue: RedisEngine, loss: str
) -> None:
    done_with_results(redis_queue, ["a", "b", "c"])
    client, results_key = redis_queue.client.redis, redis_queue.client.results_key
    if loss == "one entry":
        client.hdel(results_key, sorted(client.hkeys(results_key))[1])
    elif loss == "the hash":
        client.delete(results_key)
    else:
        client.delete(redis_queue.client.order_key)
    missing = results_key if loss != "the order" else redis_queue.client.order_key
    with pytest.raises(EngineError, match=f"{missing}.* lost"):
        list(redis_queue.results())
    assert missing in queue_results_error(redis_queue)


def test_a_damaged_result_entry_is_one_error_naming_the_key_and_the_entry(
    redis_queue: RedisEngine,
) -> None:
    done_with_results(redis_queue, ["a", "b", "c"])
    client, results_key = redis_queue.client.redis, redis_queue.client.results_key
    entry = sorted(client.hkeys(results_key))[1]
    for garbage in (b"\xff\xfe not json", b'{"id": 1}', b"[" * 5000 + b"]" * 5000):
        client.hset(results_key, entry, garbage)
        with pytest.raises(EngineError, match=f"{results_key}.*{entry}"):
            list(redis_queue.results())
        for args in ((), ("--json",)):
            assert entry in queue_results_error(redis_queue, *args)
