"""A local pool's socket: a chunk comes to the worker minion with its items and its
call's function (once), and its record goes back with its ack."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from minionize.pool.broker import Broker
from minionize.pool.channel import ChannelEngine, ChannelServer
from minionize.pool.inbox import Inbox
from minionize.pool.pickling import Values, plain_values
from tests.services import wait_for


def test_items_come_with_the_chunk_and_the_record_goes_with_the_ack(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o700)
    inbox = Inbox(str(rundir), files=False)
    call = inbox.open_call()
    broker = Broker(60.0, 3, inbox.ring)
    server = ChannelServer(os.path.join(rundir, "channel"), broker, inbox)
    engine = ChannelEngine(os.path.join(rundir, "channel"), "w0.1", 60.0)
    try:
        broker.put_function(call, b"F")
        broker.put_batch(call, 0, b"aaabb")
        broker.fill([{"call": call, "chunk": c, "start": 3 * c, "batch": 0, "offset": 3 * c,
                      "size": 3 - c, "star": False} for c in (0, 1)])
        (first,) = engine.take(1, 5.0)
        assert (first.handle.items, first.handle.function) == (b"aaa", b"F")
        engine.started(first)
        record = pickle.dumps((call, 0, 0, plain_values([1, 2, 3])))
        engine.keep_record(first, record)
        engine.ack(first)
        (second,) = engine.take(1, 5.0)  # the function is not sent again
        assert (second.handle.items, second.handle.function) == (b"bb", b"F")
        engine.retry(second, "exit code 3")  # no record: nothing delivered
        wait_for(lambda: inbox.arrivals == 1, 5, "the record")
        ((chunk, (start, values)),) = inbox.read(call)
        assert (chunk, start, values) == (0, 0, [1, 2, 3]) and isinstance(values, Values)
        wait_for(lambda: [row["attempts"] for row in broker.left()] == [1], 5, "the retry")
    finally:
        engine.close()
        server.stop()
