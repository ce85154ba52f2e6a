"""The pulsar engine against a real Apache Pulsar broker, driven by real ``minionize``.

The broker is the standalone one of :mod:`tests.services.pulsar` (resolved from Maven
Central, started once per session on 127.0.0.1). Each test uses its own topic. The
broker's admin API (``.../stats``) tells what is left on the subscription.

Run alone: ``python -m pytest tests/integration/test_pulsar_broker.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minionize.engines.pulsar.engine import PulsarEngine
from tests.conftest import RECORD, kill_leftovers, records, task_env
from tests.conftest import start_task as start_minion
from tests.services import script, wait_for
from tests.services.pulsar import PulsarBroker, pulsar_broker, pulsar_server  # noqa: F401

pytestmark = pytest.mark.service("pulsar")

# The task: write "param attempt pid" to $OUT, then exit 0 unless the param is "bad".


@dataclass
class Queue:
    broker: PulsarBroker
    topic: str
    subscription: str = "minionize"

    def engine(self, **kwargs: Any) -> PulsarEngine:
        return PulsarEngine(topic=self.topic, connection=self.broker.url,
                            subscription=self.subscription, nack_delay=0.2, **kwargs)

    def fill(self, params: list[Any]) -> None:
        engine = self.engine(decoder="json")
        try:
            assert engine.fill(params) == (len(params), 0)
        finally:
            engine.close()

    def stats(self, topic: str | None = None) -> dict[str, Any]:
        name = (topic or self.topic).rsplit("/", 1)[-1]
        url = f"{self.broker.admin_url}/admin/v2/persistent/public/default/{name}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats

    def backlog(self, topic: str | None = None) -> tuple[int, int]:
        """(messages not acknowledged, of which delivered and unacknowledged)."""
        sub = self.stats(topic)["subscriptions"][self.subscription]
        return int(sub["msgBacklog"]), int(sub["unackedMessages"])


@pytest.fixture
def queue(pulsar_server: PulsarBroker) -> Iterator[Queue]:  # noqa: F811
    yield Queue(pulsar_server, f"params-{uuid.uuid4().hex[:8]}")


def minion_env(queue: Queue, tmp_path: Path, **extra: str) -> dict[str, str]:
    variables = {
        "MINION_ENGINE": "pulsar",
        "PULSAR_CONNECTION": queue.broker.url,
        "PULSAR_TOPIC": queue.topic,
        "PULSAR_SUBSCRIPTION": queue.subscription,
        "PULSAR_DECODER": "json",
        "PULSAR_NACK_DELAY": "0.2",
        "MINION_IDLE_TIMEOUT": "3",
    }
    return task_env(tmp_path, **{**variables, **extra})


def test_two_minions_drain_200_params_each_run_once(queue: Queue, tmp_path: Path) -> None:
    queue.fill(list(range(200)))
    env = minion_env(queue, tmp_path)
    task = f'{RECORD}; echo "$PPID" >> "$OUT.minions"'
    minions = [start_minion(env, tmp_path, task, "-j", "2") for _ in range(2)]
    for minion in minions:
        code, err = minion.finish(90)
        assert code == 0, err

    rows = records(tmp_path)
    assert sorted(int(p) for p, _, _ in rows) == list(range(200))  # each exactly once
    assert {attempt for _, attempt, _ in rows} == {1}
    assert len(set((tmp_path / "out.minions").read_text().split())) == 2  # both worked
    assert queue.backlog() == (0, 0)


def test_sigkilled_minion_messages_come_back_and_run(queue: Queue, tmp_path: Path) -> None:
    queue.fill(["victim"])
    env = minion_env(queue, tmp_path)
    # The first attempt hangs; the one after the minion's death succeeds.
    task = f'{RECORD}; [ -e "$OUT.killed" ] || exec sleep 60'
    first = start_minion(env, tmp_path, task)
    try:
        wait_for(lambda: records(tmp_path), 30, "the first minion to start the task")
        first.process.kill()  # its task (sleep 60) lives on
        first.process.wait()
        (tmp_path / "out.killed").touch()
        second = start_minion(env, tmp_path, task)
        code, err = second.finish(90)
    finally:
        kill_leftovers(records(tmp_path))

    assert code == 0, err
    # The broker redelivers what a dropped connection held, but does not count that
    # redelivery (only nacks count): the second run is attempt 1 again (docs/engines.md).
    assert [(p, a) for p, a, _ in records(tmp_path)] == [("victim", 1), ("victim", 1)]
    assert queue.backlog() == (0, 0)


def test_sigterm_gives_messages_back_without_counting_an_attempt(queue: Queue,
                                                                 tmp_path: Path) -> None:
    queue.fill(["stopped", "also stopped"])
    env = minion_env(queue, tmp_path, MINION_IDLE_TIMEOUT="30")
    minion = start_minion(env, tmp_path, f"{RECORD}; exec sleep 60", "-j", "2")
    try:
        wait_for(lambda: len(records(tmp_path)) == 2, 30, "the minion to start both tasks")
        minion.process.send_signal(signal.SIGTERM)
        code, err = minion.finish(timeout=30)
    finally:
        kill_leftovers(records(tmp_path))
    assert code == 0, err
    assert queue.backlog() == (2, 0)  # back on the topic, nobody holds them

    rerun = start_minion(minion_env(queue, tmp_path), tmp_path, RECORD)
    code, err = rerun.finish(90)
    assert code == 0, err
    runs = sorted((p, a) for p, a, _ in records(tmp_path))
    assert runs == [("also stopped", 1), ("also stopped", 1), ("stopped", 1), ("stopped", 1)]
    assert queue.backlog() == (0, 0)


def test_poison_message_reaches_the_dead_letter_topic(queue: Queue, tmp_path: Path) -> None:
    queue.fill(["ok1", "bad", "ok2"])
    env = minion_env(queue, tmp_path, MINION_MAX_ATTEMPTS="3")
    code, err = start_minion(env, tmp_path, f'{RECORD}; test "$1" != bad').finish(90)

    assert code == 1, err  # a dead letter: exit 1
    rows = records(tmp_path)
    assert [a for p, a, _ in rows if p == "bad"] == [1, 2, 3]
    assert sorted(p for p, _, _ in rows if p != "bad") == ["ok1", "ok2"]
    assert queue.backlog() == (0, 0)

    import pulsar

    dead_topic = f"{queue.topic}-{queue.subscription}-DLQ"
    assert queue.backlog(dead_topic) == (1, 0)
    client = pulsar.Client(queue.broker.url)
    try:
        reader = client.subscribe(dead_topic, queue.subscription,
                                  consumer_type=pulsar.ConsumerType.Shared)
        message = reader.receive(timeout_millis=10000)
        assert message.data() == b'"bad"'
        properties = message.properties()
        assert properties["minion-attempt"] == "3"
        assert "exit code 1" in properties["minion-reason"]
        reader.close()  # not acknowledged: it stays a dead letter
    finally:
        client.close()
    assert queue.backlog(dead_topic) == (1, 0)


def test_a_broker_restart_mid_run_loses_nothing(queue: Queue, tmp_path: Path) -> None:
    count = 60
    queue.fill(list(range(count)))
    # The restart (stop, then a JVM start) may take long on a loaded machine: the
    # minions ride it out however long it takes, and do not end idle meanwhile (an
    # outage is never an empty queue; tests/integration/test_engine_outage.py).
    env = minion_env(queue, tmp_path, MINION_OUTAGE_TIMEOUT="600")
    minions = [start_minion(env, tmp_path, f"{RECORD}; sleep 0.1", "-j", "2") for _ in range(2)]
    try:
        wait_for(lambda: len(records(tmp_path)) >= 10, 60, "ten tasks to run")
        queue.broker.stop()  # a restart in the middle of the run (SIGTERM)
        queue.broker.start()  # same ports, same data
        for minion in minions:
            code, err = minion.finish(timeout=300)
            assert code == 0, err
    finally:
        if queue.broker.proc is None:
            queue.broker.start()  # the session's broker, for the tests after this one
        for minion in minions:
            if minion.process.poll() is None:
                minion.process.kill()
    rows = records(tmp_path)
    assert {int(p) for p, _, _ in rows} == set(range(count))  # nothing lost
    # At least once: the tasks in flight when the broker stopped (2 minions x 2) run
    # again, and so do params whose ack was lost: the client groups acks (100 ms) and
    # sends them without a receipt. Seen: 0 to 6 extra runs.
    extra = len(rows) - count
    print(f"\nbroker restart mid-run: {count} params, lost 0, extra runs {extra}")
    assert extra <= 12, sorted(int(p) for p, _, _ in rows)
    assert queue.backlog() == (0, 0)


def test_status_and_dead_letters_with_the_keys_of_every_engine(queue: Queue,
                                                              tmp_path: Path) -> None:
    queue.fill(["ok", "bad", "later"])
    env = minion_env(queue, tmp_path, MINION_MAX_ATTEMPTS="2",
                     PULSAR_ADMIN_URL=queue.broker.admin_url)
    def cli(*args: str) -> list[Any]:
        result = subprocess.run([script("minion-queue"), *args, "--json"], env=env,
                                capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    [status] = cli("status")
    assert status == {"todo": 3, "in_flight": 0, "expired": None, "done": None, "dead": 0,
                      "total": None}
    code, err = start_minion(env, tmp_path, f'{RECORD}; test "$1" != bad').finish(90)
    assert code == 1, err
    [status] = cli("status")
    assert (status["todo"], status["in_flight"], status["dead"]) == (0, 0, 1)
    [row] = cli("list", "dead")
    assert (row["param"], row["attempts"]) == ("bad", 2)
    assert "exit code 1" in row["reason"] and row["id"]
    assert cli("list", "dead") == [row]  # listing does not take them away
