"""Leases whose holder is a process of this host that ended: they end at once."""

from __future__ import annotations

import os
import socket
import subprocess

from minionize.engines.sweep.state import (
    FLIGHT,
    TODO,
    Owner,
    QueueState,
    claim_record,
    from_snapshot,
    gone_record,
    to_snapshot,
)
from minionize.owners import process_start

HERE = socket.gethostname()


def ended_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def claimed_by(owner: Owner, n: int = 2) -> QueueState:
    state = QueueState()
    state.apply({"o": "add", "n": n, "s": 4 * n})
    state.apply(claim_record(state.pick(n), n, owner, 1e12, 0))
    return state


def test_a_holder_of_this_host_that_ended_loses_its_leases_at_once() -> None:
    state = claimed_by(Owner("m1", HERE, ended_pid(), "", 12345))
    record = gone_record(state, 0.0, 3)
    assert record is not None and record["g"] == 1 and len(record["l"]) == 2
    state.apply(record)
    assert state.count[TODO] == 2 and state.count[FLIGHT] == 0
    assert state.attempts == {0: 1, 1: 1}


def test_at_max_attempts_the_dead_letter_says_its_minion_ended() -> None:
    state = claimed_by(Owner("m1", HERE, ended_pid(), "", 1), n=1)
    record = gone_record(state, 0.0, 1)
    assert record is not None
    state.apply(record)
    assert state.reasons[0].startswith("lease ended (its minion ended) 1 time(s); last held by "
                                       "minion m1 on ")


def test_a_pid_given_to_a_later_process_is_gone_an_unknown_start_is_not() -> None:
    me, start = os.getpid(), process_start(os.getpid())
    assert start > 0
    assert gone_record(claimed_by(Owner("m1", HERE, me, "", start)), 0.0, 3) is None
    # The pid of this process, but the claim was made by a process started earlier.
    assert gone_record(claimed_by(Owner("m1", HERE, me, "", start - 1)), 0.0, 3) is not None
    # A claim of an older minionize (no start time) by a live pid: it may be that one.
    assert gone_record(claimed_by(Owner("m1", HERE, me, "", 0)), 0.0, 3) is None


def test_a_holder_of_another_host_is_never_taken_for_gone() -> None:
    state = claimed_by(Owner("m1", HERE + "-elsewhere", ended_pid(), "", 1))
    assert gone_record(state, 0.0, 3) is None


def test_claims_and_snapshots_without_a_start_time_still_read() -> None:
    state = QueueState()
    state.apply({"o": "add", "n": 1, "s": 4})
    state.apply({"o": "claim", "w": "m1", "h": HERE, "p": 1, "j": "", "e": 1e12, "l": [[0, 0]]})
    lease = state.leases.get(0)
    assert lease is not None and lease.start == 0
    doc = to_snapshot(state)
    doc["leases"] = [row[:8] for row in doc["leases"]]  # as an older minionize wrote it
    again = from_snapshot(doc).leases.get(0)
    assert again is not None and again.start == 0 and again.started
    owner = Owner("m2", HERE, 5, "", 77)
    kept = from_snapshot(to_snapshot(claimed_by(owner, 1))).leases.get(0)
    assert kept is not None and kept.start == 77
