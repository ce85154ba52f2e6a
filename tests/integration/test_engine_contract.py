"""One contract, every engine: what ``minionize/engines/base.py`` promises, checked on
each engine this machine can run (in memory, file, sweep, a real redis-server, the
Pub/Sub emulator, and a real Apache Pulsar standalone broker).

Each engine comes as a :class:`Kit`: how to fill a fresh queue, how to open a minion on
it (as many as a test wants, each with its own lease), and what the engine can do at
all (an engine that cannot do an optional operation raises UnsupportedOperation, which
is part of the contract too). A case that an engine owned elsewhere does not pass yet is
an ``xfail(strict=True)`` naming the defect: it turns red the day the defect is fixed.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from minionize.engines.base import STATUS_KEYS as BASE_STATUS_KEYS
from minionize.engines.base import Delivery, Engine
from minionize.engines.file.engine import FileEngine
from minionize.engines.sweep.engine import SweepEngine
from minionize.errors import EngineError, UnsupportedOperation
from minionize.testing import MemoryEngine
from tests.conftest import PUBSUB_PROJECT
from tests.services import free_port, wait_for
from tests.services.pulsar import PulsarBroker, pulsar_server  # noqa: F401

STATUS_KEYS = set(BASE_STATUS_KEYS)
ENGINES = ["memory", "file", "sweep", "redis", "pubsub", "pulsar"]

#: Known disagreements of engines owned elsewhere: (engine, test) -> the defect.
#: The key is the engine and the first word of the test's name after ``test_``.
KNOWN: dict[tuple[str, str], str] = {}


@dataclass
class Kit:
    """One engine's queue for one test."""

    name: str
    #: A minion on this queue with the given lease (seconds); opened.
    minion: Callable[[float], Engine]
    #: Add params (through an administration engine, as ``minion-queue fill`` does).
    fill: Callable[[list[Any]], tuple[int, int]]
    #: The administration engine (``minion-queue status/list``).
    admin: Engine
    #: Shortest lease the engine accepts; None: no leases (one process owns the queue).
    lease: Optional[float] = None
    #: fill skips a param already in the queue (done or not).
    dedupes: bool = True
    #: An expired lease counts an attempt (the engine knows the run started).
    counts_expiry: bool = True
    #: The text the engine stored for a delivery's param (None: not inspectable).
    stored: Callable[[Delivery], Optional[str]] = lambda d: None
    #: Delete the results kept outside the process; the name of what is then missing
    #: (None: results live in the process only).
    lose_results: Optional[Callable[[], str]] = None
    opened: list[Engine] = field(default_factory=list)

    def take(self, engine: Engine, count: int = 1, timeout: float = 10.0) -> list[Delivery]:
        """Exactly ``count`` deliveries, waiting up to ``timeout`` s (engines may hand
        out fewer than asked per call)."""
        got: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += engine.take(count - len(got), 0.5)
        assert len(got) == count, f"{self.name}: took {len(got)} of {count} params"
        return got

    def nothing(self, engine: Engine, wait: float = 1.0) -> None:
        got = engine.take(5, wait)
        assert got == [], f"{self.name}: handed out {[d.param for d in got]}"

    def close(self) -> None:
        for engine in self.opened:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 (a test's own failure is what matters)
                pass


def memory_kit(tmp_path: Path) -> Kit:
    engine = MemoryEngine()
    return Kit("memory", minion=lambda lease: engine, fill=engine.fill, admin=engine)


def file_kit(tmp_path: Path) -> Kit:
    path = tmp_path / "params.jsonl"
    engines: list[FileEngine] = []

    def fill(params: list[Any]) -> tuple[int, int]:
        with open(path, "a") as out:
            for param in params:
                out.write(json.dumps(param) + "\n")
        return len(params), 0

    def minion(lease: float) -> Engine:
        if not engines:  # a file has one reader: every "minion" is the same one
            engine = FileEngine(str(path), decoder="json")
            engine.open()
            engines.append(engine)
        return engines[0]

    def lose_results() -> str:
        os.unlink(f"{path}.results")
        return "params.jsonl.results"

    kit = Kit("file", minion=minion, fill=fill, admin=FileEngine(str(path), "json"),
              dedupes=False, lose_results=lose_results)
    return kit


def sweep_kit(tmp_path: Path) -> Kit:
    directory = str(tmp_path / "sweeps")
    admin = SweepEngine(directory)

    def stored(delivery: Delivery) -> Optional[str]:
        lines = (tmp_path / "sweeps" / "params.jsonl").read_text().splitlines()
        return lines[delivery.handle[0]]

    def lose_results() -> str:
        os.unlink(tmp_path / "sweeps" / "results.jsonl")
        return "results.jsonl"

    kit = Kit("sweep", minion=lambda lease: SweepEngine(directory, lease=lease),
              fill=admin.fill, admin=admin, lease=1.0, stored=stored,
              lose_results=lose_results)
    return kit


def redis_kit(tmp_path: Path, url: str) -> Kit:
    from minionize.engines.redis.engine import RedisEngine

    stream = f"contract-{uuid.uuid4().hex[:8]}"
    admin = RedisEngine(url=url, stream=stream)
    admin.open()

    def minion(lease: float) -> Engine:
        engine = RedisEngine(url=url, stream=stream, lease=lease)
        engine.open()
        return engine

    def lose_results() -> str:
        admin.client.redis.delete(admin.client.results_key)
        return admin.client.results_key

    return Kit("redis", minion=minion, fill=admin.fill, admin=admin, lease=0.5,
               stored=lambda d: d.handle.fields["param"], lose_results=lose_results)


def pubsub_kit(tmp_path: Path) -> Kit:
    from minionize.engines.pubsub.engine import MIN_LEASE, PubSubEngine

    tag = uuid.uuid4().hex[:10]

    def make(lease: Optional[float]) -> PubSubEngine:
        return PubSubEngine(project=PUBSUB_PROJECT, topic=f"topic-{tag}", subscription=f"sub-{tag}",
                            decoder="json", lease=lease, dead_letter_topic=f"dead-{tag}")

    admin = make(None)

    def minion(lease: float) -> Engine:
        engine = make(lease)
        engine.open()
        return engine

    # Without a dead-letter policy the server gives no delivery count (documented).
    return Kit("pubsub", minion=minion, fill=admin.fill, admin=admin, lease=float(MIN_LEASE),
               dedupes=False, counts_expiry=False, stored=lambda d: d.handle.data.decode())


def pulsar_kit(tmp_path: Path, broker: PulsarBroker) -> Kit:
    from minionize.engines.pulsar.engine import PulsarEngine

    topic = f"persistent://public/default/contract-{uuid.uuid4().hex[:8]}"

    def make() -> PulsarEngine:
        return PulsarEngine(topic=topic, connection=broker.url, admin_url=broker.admin_url,
                            decoder="json", nack_delay=0.0, outage_timeout=2.0)

    admin = make()

    def minion(lease: float) -> Engine:
        engine = make()
        engine.open()
        return engine

    # Pulsar has no lease: a dead minion's messages come back when its connection drops.
    return Kit("pulsar", minion=minion, fill=admin.fill, admin=admin, dedupes=False,
               stored=lambda d: bytes(d.handle.data()).decode())


@pytest.fixture(params=ENGINES)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    name: str = request.param
    test = request.node.originalname.removeprefix("test_").split("_")[0]
    reason = KNOWN.get((name, test))
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    if name == "redis":
        made = redis_kit(tmp_path, request.getfixturevalue("redis_url"))
    elif name == "pubsub":
        request.getfixturevalue("emulator")
        made = pubsub_kit(tmp_path)
    elif name == "pulsar":
        made = pulsar_kit(tmp_path, request.getfixturevalue("pulsar_server"))
    else:
        made = {"memory": memory_kit, "file": file_kit, "sweep": sweep_kit}[name](tmp_path)
    original = made.minion

    def tracked(lease: float) -> Engine:
        engine = original(lease)
        if engine not in made.opened:
            made.opened.append(engine)
        return engine

    made.minion = tracked
    try:
        yield made
    finally:
        made.close()
        made.admin.close()


def optional(call: Callable[[], Any]) -> Any:
    """The result of an optional administration call, or None if unsupported."""
    try:
        return call()
    except UnsupportedOperation:
        return None


def counters(kit: Kit) -> Optional[dict[str, Any]]:
    status = optional(kit.admin.status)
    if status is not None:
        assert set(status) == STATUS_KEYS, f"{kit.name}: status keys {sorted(status)}"
        assert all(v is None or isinstance(v, int) for v in status.values()), status
    return status


def expect(status: Optional[dict[str, Any]], **counts: int) -> None:
    """Each counter is as expected, or None (an engine that truly cannot know)."""
    if status is None:
        return
    known = {k: status[k] for k in counts if status[k] is not None}
    assert known == {k: v for k, v in counts.items() if k in known}, status


def rows(kit: Kit, kind: str) -> Optional[list[dict[str, Any]]]:
    listed = optional(lambda: list(kit.admin.list(kind)))
    if listed is not None:
        expected = {"id", "param", "attempts"} | ({"reason"} if kind == "dead" else set())
        for row in listed:
            assert expected <= set(row), f"{kit.name}: list {kind} row {row}"
            assert "attempt" not in row, f"{kit.name}: list {kind} row says 'attempt'"
    return listed


# -- taking and settling ----------------------------------------------------------------------


def test_take_and_ack(kit: Kit) -> None:
    assert kit.fill([1, 2, 3]) == (3, 0)
    minion = kit.minion(30)
    taken = kit.take(minion, 3)
    assert sorted(d.param for d in taken) == [1, 2, 3]
    assert {d.attempt for d in taken} == {1}
    assert len({d.id for d in taken}) == 3
    for delivery in taken:
        minion.ack(delivery)
    minion.flush()
    kit.nothing(minion)
    expect(counters(kit), todo=0, in_flight=0, expired=0, done=3, dead=0, total=3)
    done = rows(kit, "done")
    if done is not None:
        assert sorted(r["param"] for r in done) == [1, 2, 3]
        assert {r["attempts"] for r in done} == {1}  # the attempts that ran


def test_retry_counts_an_attempt(kit: Kit) -> None:
    kit.fill(["x"])
    minion = kit.minion(30)
    (first,) = kit.take(minion)
    minion.retry(first, "exit code 1")
    minion.flush()
    (second,) = kit.take(minion)
    assert (second.param, second.id, second.attempt) == ("x", first.id, 2)
    minion.ack(second)
    minion.flush()
    done = rows(kit, "done")
    if done is not None:
        assert [(r["param"], r["attempts"]) for r in done] == [("x", 2)]


def test_release_does_not_count_an_attempt(kit: Kit) -> None:
    kit.fill(["x"])
    minion = kit.minion(30)
    (first,) = kit.take(minion)
    minion.release(first)
    minion.flush()
    (again,) = kit.take(minion)
    assert (again.param, again.id, again.attempt) == ("x", first.id, 1)
    minion.ack(again)


def test_dead_letter_is_kept_with_its_reason(kit: Kit) -> None:
    kit.fill(["bad", "good"])
    minion = kit.minion(30)
    taken = kit.take(minion, 2)
    for delivery in taken:
        if delivery.param == "bad":
            minion.dead_letter(delivery, "exit code 3")
        else:
            minion.ack(delivery)
    minion.flush()
    kit.nothing(minion)
    expect(counters(kit), done=1, dead=1, todo=0, in_flight=0)
    dead = rows(kit, "dead")
    if dead is not None:
        assert [(r["param"], r["attempts"]) for r in dead] == [("bad", 1)]
        assert "exit code 3" in dead[0]["reason"]
        assert dead[0]["id"] == next(d.id for d in taken if d.param == "bad")


# -- leases -------------------------------------------------------------------------------------


def test_expired_lease_gives_the_param_to_another_minion_and_counts(kit: Kit) -> None:
    if kit.lease is None:
        pytest.skip(f"the {kit.name} engine has one reader and no leases")
    kit.fill(["held"])
    crashed, other = kit.minion(kit.lease), kit.minion(kit.lease)
    (lost,) = kit.take(crashed)
    took: list[Delivery] = []
    started = time.monotonic()
    wait_for(lambda: took.extend(other.take(1, 0.2)) or took, kit.lease * 4 + 10,
             "the expired lease to bring the param back")
    assert time.monotonic() - started >= kit.lease * 0.9  # not before the lease ran out
    (again,) = took
    counted = 2 if kit.counts_expiry else 1  # the run started
    assert (again.param, again.id, again.attempt) == ("held", lost.id, counted)
    other.ack(again)
    other.flush()
    expect(counters(kit), done=1, todo=0, in_flight=0, dead=0)


def test_extended_lease_keeps_the_param(kit: Kit) -> None:
    if kit.lease is None:
        pytest.skip(f"the {kit.name} engine has one reader and no leases")
    kit.fill(["long"])
    runner, other = kit.minion(kit.lease), kit.minion(kit.lease)
    (running,) = kit.take(runner)
    interval = runner.lease_renewal_interval()
    assert interval is not None and interval < kit.lease
    until = time.monotonic() + kit.lease * 1.5  # past the lease: only renewals keep it
    while time.monotonic() < until:
        runner.extend([running])
        stolen = other.take(1, min(interval, until - time.monotonic()))
        assert stolen == [], f"{kit.name}: a renewed lease was taken over"
    runner.ack(running)
    runner.flush()
    kit.nothing(other, 0.5)
    expect(counters(kit), done=1, in_flight=0)


# -- filling ------------------------------------------------------------------------------------


def test_fill_skips_params_already_present_done_or_not(kit: Kit) -> None:
    if not kit.dedupes:
        pytest.skip(f"the {kit.name} engine keeps no record of what it holds (documented)")
    assert kit.fill(list(range(10))) == (10, 0)
    assert kit.fill(list(range(10))) == (0, 10)
    minion = kit.minion(30)
    taken = kit.take(minion, 10)
    for delivery in taken:
        minion.ack(delivery)
    minion.flush()
    assert kit.fill([*range(10), 10]) == (1, 10)  # done params are not added again
    (new,) = kit.take(minion)
    assert new.param == 10
    minion.ack(new)
    minion.flush()
    assert kit.fill([{"b": 1, "a": 2}]) == (1, 0)
    assert kit.fill([{"a": 2, "b": 1}]) == (0, 1)  # the same param, keys in another order
    expect(counters(kit), total=12, done=11, todo=1)


def test_params_are_stored_as_canonical_json(kit: Kit) -> None:
    kit.fill([{"b": [1, {"d": 1, "c": "é"}], "a": None}])
    minion = kit.minion(30)
    (delivery,) = kit.take(minion)
    assert delivery.param == {"a": None, "b": [1, {"c": "é", "d": 1}]}
    text = kit.stored(delivery)
    if text is not None:
        assert text == '{"a":null,"b":[1,{"c":"é","d":1}]}'
    minion.ack(delivery)


def test_nan_is_never_written(kit: Kit) -> None:
    if kit.name == "file":
        pytest.skip("the file engine reads a file the user wrote")
    with pytest.raises((ValueError, EngineError)):
        kit.fill([float("nan")])


# -- results ------------------------------------------------------------------------------------

#: The engines that keep a task's result with its ack (the others keep none: documented).
KEEPS_RESULTS = {"memory", "file", "sweep", "redis"}


def results(kit: Kit) -> list[dict[str, Any]]:
    rows = list(kit.admin.results())
    for row in rows:
        assert set(row) == {"id", "param", "result"}, f"{kit.name}: results row {row}"
    return rows


def test_results_come_back_in_queue_order_whatever_order_they_finished_in(kit: Kit) -> None:
    if kit.name not in KEEPS_RESULTS:
        assert not kit.minion(30).keeps_results
        with pytest.raises(UnsupportedOperation, match="does not keep results"):
            results(kit)
        return
    params = [3, "b", {"k": [1, 2]}, 1, "none"]
    kit.fill(params)
    minion = kit.minion(30)
    assert minion.keeps_results
    taken = kit.take(minion, len(params))
    for delivery in reversed(taken):
        if delivery.param == "none":
            minion.ack(delivery)  # the task returned nothing
        else:
            minion.ack(delivery, json.dumps({"of": delivery.param, "é": 0.1}))
    minion.flush()
    rows = results(kit)
    if kit.name == "redis":  # keeps no row for a param done without a result (memory)
        params.remove("none")
    assert [row["param"] for row in rows] == params
    assert [row["result"] for row in rows] == [
        None if p == "none" else {"of": p, "é": 0.1} for p in params
    ]
    ids = {d.param if isinstance(d.param, (int, str)) else "k": d.id for d in taken}
    for row in rows:
        key = row["param"] if isinstance(row["param"], (int, str)) else "k"
        if row["result"] is not None or kit.name != "file":
            assert row["id"] == ids[key], row
        else:  # the file engine keeps nothing for a line done without a result but .done
            assert row["id"], row


def test_results_hold_done_params_only_and_the_attempt_that_succeeded(kit: Kit) -> None:
    if kit.name not in KEEPS_RESULTS:
        pytest.skip(f"the {kit.name} engine keeps no results")
    kit.fill(["retried", "dead"])
    minion = kit.minion(30)
    taken = {d.param: d for d in kit.take(minion, 2)}
    minion.retry(taken["retried"], "exit code 1")
    minion.dead_letter(taken["dead"], "exit code 2")
    minion.flush()
    assert results(kit) == []
    (again,) = kit.take(minion)
    assert (again.param, again.attempt) == ("retried", 2)
    minion.ack(again, '"second"')
    minion.flush()
    kit.fill(["todo"])
    assert [(r["param"], r["result"]) for r in results(kit)] == [("retried", "second")]


def test_a_large_result_is_kept_exactly(kit: Kit) -> None:
    if kit.name not in KEEPS_RESULTS:
        pytest.skip(f"the {kit.name} engine keeps no results")
    kit.fill(["big"])
    minion = kit.minion(30)
    (delivery,) = kit.take(minion)
    value = {"text": "é\u2028\n\t" * 50_000, "n": [10**20, -0.5, True, None]}
    minion.ack(delivery, json.dumps(value, ensure_ascii=False))
    minion.flush()
    assert [r["result"] for r in results(kit)] == [value]


def test_results_deleted_are_an_error_naming_what_is_missing(kit: Kit) -> None:
    if kit.name not in KEEPS_RESULTS or kit.lose_results is None:
        pytest.skip(f"the {kit.name} engine keeps no results outside its process")
    kit.fill(["a", "b"])
    minion = kit.minion(30)
    for delivery in kit.take(minion, 2):
        minion.ack(delivery, json.dumps([delivery.param]))
    minion.flush()
    assert [r["result"] for r in results(kit)] == [["a"], ["b"]]
    missing = kit.lose_results()
    with pytest.raises(EngineError, match=re.escape(missing) + ".*lost"):
        results(kit)


# -- outages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redis", "pubsub", "pulsar"])
def test_an_unreachable_server_is_ridden_out_for_the_outage_timeout(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minionize.config import Settings
    from minionize.engines import engine_class

    port = free_port()  # nothing listens there
    env = {"MINION_ENGINE": name, "MINION_OUTAGE_TIMEOUT": "2"}
    if name == "redis":
        pytest.importorskip("redis")
        env["MINION_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    elif name == "pulsar":
        pytest.importorskip("pulsar")
        env.update(PULSAR_CONNECTION=f"pulsar://127.0.0.1:{port}", PULSAR_TOPIC="outage",
                   PULSAR_ADMIN_URL=f"http://127.0.0.1:{port}")
    else:
        request.getfixturevalue("emulator")
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
        env.update(GOOGLE_PROJECT_ID=PUBSUB_PROJECT, GOOGLE_TOPIC_ID="topic-outage",
                   GOOGLE_SUBSCRIPTION="sub-outage")
    engine = engine_class(name).from_settings(Settings.from_env(env))
    started = time.monotonic()
    with pytest.raises(EngineError, match="MINION_OUTAGE_TIMEOUT"):
        if name == "pulsar":
            engine.open()
        while time.monotonic() - started < 30:
            engine.take(1, 0.5)
    took = time.monotonic() - started
    assert 1.5 < took < 15, f"{name}: gave up after {took:.1f}s with MINION_OUTAGE_TIMEOUT=2"
    engine.close()
