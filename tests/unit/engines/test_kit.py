"""The kit every engine shares: the outage policy, canonical JSON, redaction."""

from __future__ import annotations

import math

import pytest

from minionize.engines.kit import Outage, Unreachable, redact
from minionize.errors import EngineError
from minionize.params import canonical_json


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_an_outage_shorter_than_the_limit_is_ridden_out() -> None:
    clock = Clock()
    outage = Outage("queue q", limit=10, sleep=clock.sleep, clock=lambda: clock.now)
    failures = iter([ConnectionError("refused")] * 4)

    def call() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert outage.call(call, (ConnectionError,)) == "ok"
    assert clock.pauses == [0.1, 0.2, 0.4, 0.8]
    assert not outage.down


def test_an_outage_longer_than_the_limit_is_an_engine_error_naming_the_queue() -> None:
    clock = Clock()
    outage = Outage("queue q", limit=10, sleep=clock.sleep, clock=lambda: clock.now)

    def call() -> None:
        raise ConnectionError("refused by redis://:hunter2@host/0")

    with pytest.raises(EngineError, match="queue q unreachable for 10s") as caught:
        outage.call(call, (ConnectionError,))
    assert "hunter2" not in str(caught.value)
    assert max(clock.pauses) <= 5.0
    assert clock.now == pytest.approx(10.0)


def test_other_errors_are_not_retried() -> None:
    outage = Outage("queue q", limit=10, sleep=lambda s: None)

    def call() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        outage.call(call, (ConnectionError,))


def test_canonical_json_sorts_keys_and_refuses_what_json_cannot_hold() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json(value)


@pytest.mark.parametrize("text, secret", [
    ("redis://127.0.0.1:6379/0?password=hunter2", "hunter2"),
    ("redis://:pre@hunter2at@host:6379/0", "hunter2at"),
    ("redis://user:hunter2@host/0", "hunter2"),
    ("error talking to rediss://default:hunter2@h:1/0: refused", "hunter2"),
    ("pulsar+ssl://h:6651/?token=hunter2&x=1", "hunter2"),
])
def test_redact_removes_every_credential_form(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_redact_keeps_a_url_without_credentials() -> None:
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_an_interruptible_call_gives_up_once_the_minion_stops() -> None:
    import threading
    import time

    from minionize.engines.kit import Interrupted

    def away() -> None:
        raise Unreachable("connection refused")

    outage = Outage("queue q", limit=60)
    threading.Timer(0.3, outage.stopping.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        outage.call(away, interruptible=True)
    assert time.monotonic() - started < 2
    # A call that is not interruptible (a settle) still rides the outage out.
    fake = Outage("queue q", limit=0.2, sleep=lambda s: None)
    fake.stopping.set()
    with pytest.raises(EngineError, match="unreachable for"):
        fake.call(away)
