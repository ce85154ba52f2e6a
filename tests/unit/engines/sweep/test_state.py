"""The sweep queue's state machine alone: journal records in, statuses out, no file."""

from __future__ import annotations

import builtins
import os
from typing import Any

import pytest

from minionize.engines.sweep.state import (
    DEAD,
    DONE,
    FLIGHT,
    TODO,
    BadRecord,
    Owner,
    QueueState,
    claim_record,
    expire_record,
    from_snapshot,
    to_snapshot,
)

ME = Owner("m1", "host-a", 11, "job-7")
OTHER = Owner("m2", "host-b", 22)


@pytest.fixture(autouse=True)
def no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state machine must not touch a file: opening one fails the test."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"the state machine opened a file: {args!r}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)


def queue(n: int) -> QueueState:
    state = QueueState()
    assert state.apply({"o": "add", "n": n, "s": 2 * n})
    return state


def claim(state: QueueState, owner: Owner, count: int, expiry: float, seq: int,
          ahead: int = 0) -> list[int]:
    picks = state.pick(count + ahead)
    state.apply(claim_record(picks, count, owner, expiry, seq))
    return picks


def counts(state: QueueState) -> tuple[int, int, int, int]:
    return state.count[TODO], state.count[FLIGHT], state.count[DONE], state.count[DEAD]


def test_claim_then_ack_moves_a_param_to_done() -> None:
    state = queue(3)
    assert claim(state, ME, 2, expiry=100.0, seq=0) == [0, 1]
    assert counts(state) == (1, 2, 0, 0)
    lease = state.leases.get(0)
    assert lease is not None and lease.describe() == "minion m1 on host-a (pid 11, job job-7)"
    state.apply({"o": "ack", "i": 0, "w": "m1", "q": 0})
    assert counts(state) == (1, 1, 1, 0) and len(state.leases) == 1


def test_retry_counts_an_attempt_release_does_not_and_both_put_back() -> None:
    state = queue(2)
    claim(state, ME, 2, 100.0, seq=0)
    state.apply({"o": "retry", "i": 0, "w": "m1", "q": 0, "why": "exit 1"})
    state.apply({"o": "release", "i": 1, "w": "m1", "q": 1})
    assert state.attempts == {0: 1} and counts(state) == (2, 0, 0, 0)
    # Put back behind the cursor: a later pick still finds them, in queue order.
    assert sorted(state.pick(5)) == [0, 1]


def test_a_settle_from_a_claim_that_lost_its_lease_is_ignored_but_a_late_ack_counts() -> None:
    state = queue(1)
    claim(state, ME, 1, expiry=10.0, seq=0)
    record = expire_record(state, now=11.0, max_attempts=3)
    assert record == {"o": "expire", "l": [[0, "m1", 0, 0]]}
    state.apply(record)
    claim(state, OTHER, 1, expiry=100.0, seq=0)
    state.apply({"o": "retry", "i": 0, "w": "m1", "q": 0})  # m1's stale failure
    assert state.attempts == {0: 1} and counts(state) == (0, 1, 0, 0)
    state.apply({"o": "ack", "i": 0, "w": "m1", "q": 0})  # m1's late success
    state.apply({"o": "ack", "i": 0, "w": "m2", "q": 0})
    assert counts(state) == (0, 0, 1, 0) and len(state.leases) == 0


def test_expiry_at_max_attempts_dead_letters_naming_the_last_holder() -> None:
    state = queue(1)
    for seq, now in [(0, 5.0), (1, 15.0)]:
        claim(state, ME, 1, expiry=now, seq=seq)
        record = expire_record(state, now=now, max_attempts=2)
        assert record is not None
        state.apply(record)
    assert counts(state) == (0, 0, 0, 1) and state.attempts == {0: 2}
    assert state.reasons[0] == (
        "lease expired 2 time(s); last held by minion m1 on host-a (pid 11, job job-7)"
    )


def test_a_renewed_lease_does_not_expire_at_its_old_end() -> None:
    state = queue(1)
    claim(state, ME, 1, expiry=10.0, seq=0)
    state.apply({"o": "extend", "w": "m1", "e": 50.0, "l": [[0, 0]]})
    assert expire_record(state, now=20.0, max_attempts=3) is None
    assert state.leases.counts(20.0) == (1, 0) and state.leases.counts(60.0) == (0, 1)
    assert expire_record(state, now=60.0, max_attempts=3) is not None


def test_a_param_claimed_ahead_expires_without_an_attempt_until_started() -> None:
    state = queue(3)
    claim(state, ME, 1, expiry=10.0, seq=0, ahead=2)  # 0 runs, 1 and 2 wait
    state.apply({"o": "start", "w": "m1", "l": [[1, 1]]})  # 1 is handed to a task
    record = expire_record(state, now=10.0, max_attempts=1)
    assert record is not None and sorted(e[3] for e in record["l"]) == [0, 1, 1]
    state.apply(record)
    assert state.attempts == {0: 1, 1: 1} and state.count[DEAD] == 2
    assert state.status[2] == TODO  # never ran: no attempt, not dead


def test_requeue_makes_dead_letters_todo_with_fresh_attempts() -> None:
    state = queue(2)
    claim(state, ME, 2, 100.0, seq=0)
    state.apply({"o": "dead", "i": 1, "w": "m1", "q": 1, "why": "exit 3"})
    assert state.reasons == {1: "exit 3"} and state.indices(DEAD) == [1]
    state.apply({"o": "requeue"})
    assert state.reasons == {} and state.attempts == {} and state.peek(5) == [1]


def test_void_lines_become_dead_letters_and_an_ack_revives_a_dead_param() -> None:
    state = queue(3)
    state.apply({"o": "void", "l": [2], "why": "not a param"})
    assert state.reasons == {2: "not a param"} and counts(state) == (2, 0, 0, 1)
    state.apply({"o": "ack", "i": 2, "w": "m1", "q": 9})
    assert state.reasons == {} and counts(state) == (2, 0, 1, 0)


def test_pick_takes_params_in_fill_order_and_peek_takes_nothing() -> None:
    state = queue(5)
    assert state.peek(2) == [0, 1] and state.peek(2) == [0, 1]
    claim(state, ME, 3, 100.0, seq=0)
    state.apply({"o": "release", "i": 1, "w": "m1", "q": 1})
    assert state.peek(5) == [3, 4, 1]
    assert state.pick(5) == [3, 4, 1] and state.pick(5) == []


def test_lock_epochs_only_rise() -> None:
    state = queue(0)
    state.apply({"o": "break", "e": 2, "was": "minion m1"})
    state.apply({"o": "head", "g": 1, "n": 0, "s": 0, "e": 1})
    assert state.lock_epoch == 2


def test_unknown_records_are_skipped_and_malformed_ones_refused() -> None:
    state = queue(1)
    assert state.apply({"o": "from-the-future"}) is False
    with pytest.raises(BadRecord, match="malformed record"):
        state.apply({"o": "ack", "i": 5})  # no param 5
    with pytest.raises(BadRecord):
        state.apply({"o": "claim", "w": "m1"})


def test_replaying_the_same_records_gives_the_same_state_and_snapshot() -> None:
    first = queue(6)
    records: list[dict[str, Any]] = [
        claim_record([0, 1, 2], 2, ME, 10.0, 0),
        {"o": "ack", "i": 0, "w": "m1", "q": 0},
        {"o": "dead", "i": 1, "w": "m1", "q": 1, "why": "boom"},
        claim_record([3], 1, OTHER, 50.0, 0),
        {"o": "expire", "l": [[2, "m1", 2, 0]]},
        {"o": "adopt", "from": "execo", "done": [4]},
    ]
    for record in records:
        first.apply(record)
    second = queue(6)
    for record in records:
        second.apply(record)
    assert to_snapshot(first) == to_snapshot(second)
    again = from_snapshot(to_snapshot(first))
    assert to_snapshot(again) == to_snapshot(first)
    assert counts(again) == counts(first) == (2, 1, 2, 1)
    assert again.imported_from == "execo"


def test_a_snapshot_that_does_not_hold_a_state_is_refused() -> None:
    good = to_snapshot(queue(2))
    with pytest.raises(BadRecord, match="unknown statuses"):
        from_snapshot({**good, "state": "tz"})
    with pytest.raises(BadRecord, match="disagree"):
        from_snapshot({**good, "params": 3})
    with pytest.raises(BadRecord, match="unreadable contents"):
        from_snapshot({**good, "leases": [[0, "m1"]]})
