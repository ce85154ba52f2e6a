"""Helpers shared by the tests that need real services."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(service: str, reason: str) -> NoReturn:
    """Skip a test whose service cannot run here; under CI=true that is a failure,
    because the CI run installs every service the tests need."""
    message = f"{service} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a skipped {service} test is a failure)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Wait until ``condition()`` is true, or fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def script(name: str) -> str:
    """The console script installed with this Python (what a user's PATH gives)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run pip install -e .")
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


Cluster = TypeVar("Cluster")


def user_name() -> str:
    """The name of the user the tests run as (the jobs' owner on a test cluster)."""
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def start_or_skip(service: str, cluster: Cluster, failures: tuple[type[BaseException], ...],
                  daemons: tuple[str, ...], needs_root: str) -> Cluster:
    """``cluster.start()``, or skip the test (fail under CI=true) saying why it cannot:
    not root (``needs_root`` says why it must be), a program missing, or a start that
    failed (``failures``), with the last lines of each daemon's log."""
    if os.geteuid() != 0:
        unavailable(service, needs_root)
    started: Any = cluster
    try:
        started.start()
    except FileNotFoundError as error:
        started.stop()
        unavailable(service, str(error))
    except (*failures, AssertionError, OSError) as error:
        logs = "\n".join(f"--- {n}\n{started.log_tail(n)}" for n in daemons)
        started.stop()
        unavailable(service, f"could not start: {error}\n{logs}")
    return cluster
