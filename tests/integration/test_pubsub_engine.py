"""The pubsub engine against the real Pub/Sub emulator, driven by real ``minionize``
processes.

The emulator (``cloud-pubsub-emulator`` from the Google Cloud SDK, a Java program) is
started once by the ``emulator`` fixture of tests/conftest.py on 127.0.0.1 and stopped
by its PID. Each test uses its own topic and subscription.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest

from minionize.config import Settings
from minionize.engines import engine_class
from minionize.engines.pubsub.engine import PubSubEngine
from minionize.errors import ConfigError, MissingExtraError
from tests.conftest import PUBSUB_PROJECT
from tests.services import wait_for

pytestmark = pytest.mark.service("pubsub")

PROJECT = PUBSUB_PROJECT
# The task: write "param attempt pid" to $OUT; fail for the param "bad".
RECORD = 'echo "$1 $MINION_ATTEMPT $$" >> "$OUT"; [ "$1" != bad ]'
# The task: write "start param attempt" to $OUT, sleep $NAP, write "end param".
NAP = 'echo "start $1 $MINION_ATTEMPT" >> "$OUT"; sleep "$NAP"; echo "end $1" >> "$OUT"'


class Queue:
    """A topic and a subscription of their own, with the helpers a test needs."""

    def __init__(self, host: str, tmp_path: Path) -> None:
        from google.cloud import pubsub_v1

        self.host = host
        self.tmp_path = tmp_path
        tag = uuid.uuid4().hex[:10]
        self.topic = f"topic-{tag}"
        self.subscription = f"sub-{tag}"
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.out = tmp_path / "runs.txt"

    def path(self, kind: str, name: str) -> str:
        return f"projects/{PROJECT}/{kind}/{name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINION_", "GOOGLE_"))}
        env.update(
            MINION_ENGINE="pubsub",
            PUBSUB_EMULATOR_HOST=self.host,
            GOOGLE_PROJECT_ID=PROJECT,
            GOOGLE_TOPIC_ID=self.topic,
            GOOGLE_SUBSCRIPTION=self.subscription,
            MINION_REPORTER="stdout",
            OUT=str(self.out),
        )
        env.update(extra)
        return env

    def engine(self, **extra: str) -> PubSubEngine:
        engine = PubSubEngine.from_settings(Settings.from_env(self.env(**extra)))
        engine.open()
        return engine

    def fill(self, params: list[Any], **extra: str) -> None:
        engine = PubSubEngine.from_settings(Settings.from_env(self.env(**extra)))
        try:
            assert engine.fill(params) == (len(params), 0)
        finally:
            engine.close()

    def minion(self, script: str, *, name: str = "m", new_session: bool = False,
               **extra: str) -> subprocess.Popen[str]:
        log = open(self.tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed by the child's exit)
        return subprocess.Popen(
            [sys.executable, "-m", "minionize", "sh", "-c", script, "sh"],
            env=self.env(**extra), cwd=self.tmp_path, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, start_new_session=new_session,
        )

    def command(self, *args: str, **extra: str) -> str:
        """Run ``minion-queue ARGS`` as a user would; its standard output."""
        done = subprocess.run(
            [sys.executable, "-c", "from minionize.cli.queue import main; raise SystemExit(main())",
             *args],
            env=self.env(**extra), cwd=self.tmp_path, capture_output=True, text=True, timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def log(self, name: str = "m") -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def runs(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [line.split() for line in self.out.read_text().splitlines()]

    def create(self, ack_deadline: int = 10, dead_letter: Optional[tuple[str, int]] = None) -> None:
        self.publisher.create_topic(request={"name": self.path("topics", self.topic)})
        request: dict[str, Any] = {
            "name": self.path("subscriptions", self.subscription),
            "topic": self.path("topics", self.topic),
            "ack_deadline_seconds": ack_deadline,
        }
        if dead_letter is not None:
            topic, attempts = dead_letter
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.path("topics", topic),
                "max_delivery_attempts": attempts,
            }
        self.subscriber.create_subscription(request=request)

    def drain(self, subscription: str, expect: int = 0, wait: float = 2.0) -> list[Any]:
        """The messages of ``subscription``, acked: ``expect`` of them (up to 20 s), then
        whatever else comes within ``wait`` s."""
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(got) >= expect:
                deadline = min(deadline, time.monotonic() + wait)
            response = self.subscriber.pull(
                request={"subscription": self.path("subscriptions", subscription), "max_messages": 100},
                timeout=1,
            )
            if response.received_messages:
                got.extend(r.message for r in response.received_messages)
                self.subscriber.acknowledge(request={
                    "subscription": self.path("subscriptions", subscription),
                    "ack_ids": [r.ack_id for r in response.received_messages],
                })
            else:
                time.sleep(0.2)
        return got


def finish(process: subprocess.Popen[str], timeout: float = 60) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture
def queue(emulator: str, tmp_path: Path) -> Queue:
    return Queue(emulator, tmp_path)


# -- configuration (no emulator needed) --------------------------------------------------
def test_the_alias_google_names_the_same_engine() -> None:
    assert engine_class("google") is PubSubEngine
    assert engine_class("pubsub") is PubSubEngine


@pytest.mark.parametrize("missing", ["GOOGLE_PROJECT_ID", "GOOGLE_TOPIC_ID", "GOOGLE_SUBSCRIPTION"])
def test_a_missing_variable_is_named(missing: str) -> None:
    values = {"GOOGLE_PROJECT_ID": "p", "GOOGLE_TOPIC_ID": "topic", "GOOGLE_SUBSCRIPTION": "sub"}
    del values[missing]
    with pytest.raises(ConfigError, match=missing):
        PubSubEngine.from_settings(Settings.from_env(values))


def test_bad_names_and_decoders_are_refused() -> None:
    base = {"GOOGLE_PROJECT_ID": "p", "GOOGLE_TOPIC_ID": "topic", "GOOGLE_SUBSCRIPTION": "sub"}
    with pytest.raises(ConfigError, match="GOOGLE_SUBSCRIPTION"):
        PubSubEngine.from_settings(Settings.from_env({**base, "GOOGLE_SUBSCRIPTION": "s"}))
    with pytest.raises(ConfigError, match="GOOGLE_DECODER"):
        PubSubEngine.from_settings(Settings.from_env({**base, "GOOGLE_DECODER": "yaml"}))


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.pubsub_v1", None)
    cloud = sys.modules.get("google.cloud")
    if cloud is not None:
        monkeypatch.delattr(cloud, "pubsub_v1", raising=False)
    engine = PubSubEngine(project="p", topic="topic", subscription="sub")
    with pytest.raises(MissingExtraError, match=r"pip install 'minionize\[pubsub\]'"):
        engine.open()


# -- against the emulator ----------------------------------------------------------------
def test_fill_creates_the_subscription_first_and_take_never_exceeds_the_free_slots(
    queue: Queue,
) -> None:
    queue.fill([f"p{i}" for i in range(10)])  # topic and subscription do not exist yet
    first, second = queue.engine(), queue.engine()
    try:
        taken = first.take(3, 1.0)
        assert 1 <= len(taken) <= 3
        assert all(d.attempt == 1 for d in taken)
        rest = []
        deadline = time.monotonic() + 10
        while len(rest) < 10 - len(taken) and time.monotonic() < deadline:
            rest += second.take(10, 0.5)
        assert sorted(d.param for d in taken + rest) == sorted(f"p{i}" for i in range(10))
        for d in taken + rest:
            first.ack(d)
        status = first.status()  # the shared keys; the API tells no backlog
        assert status == dict.fromkeys(("todo", "in_flight", "expired", "done", "dead", "total"))
    finally:
        first.close()
        second.close()


def test_round_trip_of_200_params_with_two_minions_none_run_twice(queue: Queue) -> None:
    params = [str(i) for i in range(200)]
    queue.fill(params)
    minions = [
        queue.minion(RECORD, name=f"m{i}", MINION_CONCURRENCY="2", MINION_IDLE_TIMEOUT="3")
        for i in range(2)
    ]
    codes = [finish(m) for m in minions]
    assert codes == [0, 0], queue.log("m0") + queue.log("m1")
    runs = queue.runs()
    assert sorted(r[0] for r in runs) == sorted(params)  # every param once, none twice
    assert {r[1] for r in runs} == {"1"}
    done = sum(queue.log(f"m{i}").count(" done ") for i in range(2))
    assert done == 200
    assert all(" done " in queue.log(f"m{i}") for i in range(2)), "one minion did nothing"
    assert queue.drain(queue.subscription, wait=2) == []


def test_a_failing_param_is_retried_then_dead_lettered_with_its_reason(queue: Queue) -> None:
    dead = f"dead-{queue.topic}"
    filled = queue.command("fill", "good", "bad", MINION_DEAD_LETTER_TOPIC=dead)
    assert "added 2 params" in filled
    minion = queue.minion(RECORD, MINION_DEAD_LETTER_TOPIC=dead, MINION_MAX_ATTEMPTS="3",
                          MINION_IDLE_TIMEOUT="3")
    assert finish(minion) == 1, queue.log()  # 1: a param was dead-lettered
    runs = queue.runs()
    assert [r[1] for r in runs if r[0] == "bad"] == ["1", "2", "3"]
    assert [r[0] for r in runs].count("good") == 1
    assert queue.drain(queue.subscription, wait=1) == []
    # The dead letter, with its reason, in a subscription named after the topic.
    listed = queue.command("list", "dead", "--json", MINION_DEAD_LETTER_TOPIC=dead)
    records = [json.loads(line) for line in listed.splitlines()]
    assert [(r["param"], r["attempts"]) for r in records] == [("bad", 3)]
    assert "exit code 1" in records[0]["reason"]
    # Listing kept it; requeue-dead makes it a first attempt again.
    requeued = queue.command("requeue-dead", MINION_DEAD_LETTER_TOPIC=dead)
    assert "1" in requeued
    again = queue.drain(queue.subscription, expect=1, wait=1)
    assert [m.data for m in again] == [b"bad"]
    assert "minion_attempt" not in again[0].attributes
    assert queue.drain(dead, wait=1) == []


def test_a_dead_letter_policy_moves_the_param_after_max_attempts_runs(queue: Queue) -> None:
    dead = f"dead-{queue.topic}"
    queue.publisher.create_topic(request={"name": queue.path("topics", dead)})
    queue.subscriber.create_subscription(
        request={"name": queue.path("subscriptions", dead), "topic": queue.path("topics", dead)}
    )
    queue.create(dead_letter=(dead, 5))  # the server moves it after 5 deliveries
    queue.fill(["bad"])
    minion = queue.minion(RECORD, MINION_MAX_ATTEMPTS="3", MINION_IDLE_TIMEOUT="4")
    assert finish(minion) == 1, queue.log()
    # Run MINION_MAX_ATTEMPTS times, not max_delivery_attempts times.
    assert [r[1] for r in queue.runs()] == ["1", "2", "3"]
    wait_for(lambda: queue.command("list", "dead"), 20, "the server to move the param")
    listed = queue.command("list", "dead", "--json")
    assert "after 5 deliveries" in json.loads(listed)["reason"]
    letters = queue.drain(dead, expect=1)
    assert [m.data for m in letters] == [b"bad"]
    assert dict(letters[0].attributes)["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


def test_a_task_longer_than_the_ack_deadline_is_not_run_twice(queue: Queue) -> None:
    queue.create(ack_deadline=10)  # the lease is the subscription's ack deadline: 10 s
    queue.fill(["long"])
    runner = queue.minion(NAP, name="runner", NAP="15", MINION_IDLE_TIMEOUT="1")
    wait_for(lambda: queue.runs(), 30, "the long task to start")
    other = queue.minion(NAP, name="other", NAP="0")
    assert finish(runner, 60) == 0, queue.log("runner")
    other.send_signal(signal.SIGTERM)
    assert finish(other) == 0, queue.log("other")
    assert queue.runs() == [["start", "long", "1"], ["end", "long"]], queue.log("other")
    assert queue.drain(queue.subscription, wait=2) == []


def test_a_sigkilled_minions_param_is_run_by_another_minion(queue: Queue) -> None:
    queue.fill(["orphan"])
    victim = queue.minion(NAP, name="victim", new_session=True, NAP="120", MINION_LEASE="10")
    wait_for(lambda: queue.runs(), 30, "the task to start")
    os.killpg(victim.pid, signal.SIGKILL)  # the minion and its task, with no goodbye
    victim.wait()
    killed_at = time.monotonic()
    heir = queue.minion(NAP, name="heir", NAP="0")
    wait_for(lambda: len(queue.runs()) == 3, 40, "another minion to run the param")
    came_back_after = time.monotonic() - killed_at
    heir.send_signal(signal.SIGTERM)
    assert finish(heir) == 0, queue.log("heir")
    runs = queue.runs()
    assert runs[0] == ["start", "orphan", "1"]
    assert runs[1:] == [["start", "orphan", "1"], ["end", "orphan"]], queue.log("heir")
    assert came_back_after < 25  # the lease is 10 s


def test_sigterm_gives_the_param_back_at_once(queue: Queue) -> None:
    queue.fill(["stopped"])  # the subscription minionize creates has a 60 s ack deadline
    minion = queue.minion(NAP, NAP="120")
    wait_for(lambda: queue.runs(), 30, "the task to start")
    minion.send_signal(signal.SIGTERM)
    assert finish(minion) == 0, queue.log()
    engine = queue.engine()
    try:
        asked = time.monotonic()
        taken: list[Any] = []
        while not taken and time.monotonic() - asked < 10:
            taken = engine.take(1, 1.0)
        assert [d.param for d in taken] == ["stopped"], "not back within 10 s of a 60 s lease"
        assert taken[0].attempt == 1  # a release is not an attempt
        engine.ack(taken[0])
    finally:
        engine.close()


def test_a_release_counts_no_attempt_under_a_dead_letter_policy(queue: Queue) -> None:
    """With a dead-letter policy the server counts every delivery, nacks included: a
    graceful stop must still not cost the param an attempt."""
    dead = f"dead-{queue.topic}"
    queue.publisher.create_topic(request={"name": queue.path("topics", dead)})
    queue.create(dead_letter=(dead, 5))
    queue.fill(["x"])
    engine = queue.engine()
    try:
        attempts = []
        for _ in range(3):  # released twice, then run
            taken: list[Any] = []
            deadline = time.monotonic() + 20
            while not taken and time.monotonic() < deadline:
                taken = engine.take(1, 1.0)
            assert [d.param for d in taken] == ["x"]
            attempts.append(taken[0].attempt)
            if len(attempts) < 3:
                engine.release(taken[0])
        engine.retry(taken[0], "exit code 1")  # a failure still counts
        again: list[Any] = []
        deadline = time.monotonic() + 20
        while not again and time.monotonic() < deadline:
            again = engine.take(1, 1.0)
        attempts.append(again[0].attempt)
        engine.ack(again[0])
    finally:
        engine.close()
    assert attempts == [1, 1, 1, 2]
