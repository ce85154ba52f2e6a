"""A task's lock: callbacks written before ``attach``/``signal`` still hold the same one."""

from __future__ import annotations

import threading

from minionize.callbacks.base import Task
from minionize.engines.base import Delivery
from tests.services import wait_for


def test_task_lock_is_the_lock_that_signal_takes() -> None:
    task = Task(Delivery(param=1, id="1"))
    sent: list[object] = []
    with task.lock:  # an old-style callback setting its handle
        task.handle = "process"
        signaller = threading.Thread(target=task.signal, args=(lambda h: sent.append(h),))
        signaller.start()
        signaller.join(0.2)
        assert signaller.is_alive() and sent == []  # the stop waits for the callback
    wait_for(lambda: sent == ["process"], 5, "the stop reached the handle")
    signaller.join(5)
