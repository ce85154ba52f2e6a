"""Fixtures and helpers shared by every test directory.

* :class:`RedisServer` and the ``redis_url`` fixture: a real redis-server on 127.0.0.1
  (a free port), stopped by its PID; ``redis_queue``: an engine on a fresh stream there.
* The ``emulator`` fixture: the Google Cloud Pub/Sub emulator, started once per session.
* :func:`sh` (and :func:`sh_bytes`), :func:`status_json`, :func:`queue_status`,
  :func:`start_minion`, :func:`drain`: what several test files need to drive the
  commands and engines.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from minionize.engines.base import Delivery, Engine
from minionize.engines.redis.engine import RedisEngine
from tests.services import free_port, script, unavailable, wait_for
from tests.services.kubernetes import kubernetes  # noqa: F401 - the Kubernetes cluster fixture
from tests.services.slurm import slurm  # noqa: F401 - the SLURM fixture, for every module

# -- commands ------------------------------------------------------------------------------


def user_environment() -> dict[str, str]:
    """This environment without minionize's settings, this Python's scripts first in
    ``PATH``: what a user's shell in a fresh terminal gives a command."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINION_", "FILE_", "EXECO_", "REPORTER_", "DRY"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def task_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """:func:`user_environment` for minions whose tasks record into ``$OUT`` (see
    :data:`RECORD`), unbuffered, stopped within 2 s, with ``variables`` set."""
    env = user_environment()
    env.update(MINION_GRACE_PERIOD="2", OUT=str(tmp_path / "out"), PYTHONUNBUFFERED="1")
    env.update(variables)
    return env


def sh(command: str, env: dict[str, str], timeout: float = 60,
       stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    """``bash -c COMMAND``: what a user types, with its output captured; its standard
    input is ``stdin`` through a pipe, or, without it, /dev/null (as in a batch job: no
    input, where a terminal's would not be one either)."""
    if stdin is None:
        return subprocess.run(["bash", "-c", command], env=env, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return subprocess.run(["bash", "-c", command], env=env, text=True, capture_output=True,
                          timeout=timeout, input=stdin)


def sh_bytes(command: str, env: dict[str, str],
             timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """:func:`sh`, with the output as the very bytes written (not decoded); standard
    input is /dev/null."""
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def status_json(env: dict[str, str], *args: str, cwd: Optional[Path] = None) -> dict[str, Any]:
    """``minion-status --json ARGS`` (in ``cwd``), parsed."""
    result = subprocess.run([script("minion-status"), "--json", *args], env=env, text=True,
                            capture_output=True, timeout=30, cwd=cwd)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def queue_status(env: dict[str, str], *args: str,
                 cwd: Optional[Path] = None) -> dict[str, Any]:
    """``minion-queue status --json ARGS`` (in ``cwd``), parsed."""
    result = subprocess.run([script("minion-queue"), "status", "--json", *args], env=env,
                            text=True, capture_output=True, timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


@dataclass
class Minion:
    """A real ``minionize`` process in its own session (its process group is its PID);
    stderr goes to a file, since a pipe would be held open by a task that outlives a
    SIGKILLed minion."""

    process: subprocess.Popen[bytes]
    stderr: Path
    #: Where its stdout goes, if it is kept (``start_minion(..., keep_stdout=True)``).
    stdout: Optional[Path] = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the minion; return its exit code and stderr."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(
                f"minion still running after {timeout}s; stderr: {self.err()}"
            ) from None
        return self.process.returncode, self.err()

    def err(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def out(self) -> str:
        """What it printed on stdout (kept only with ``keep_stdout=True``)."""
        assert self.stdout is not None, "start_minion(..., keep_stdout=True) keeps stdout"
        return self.stdout.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the minion and everything in its process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def start_minion(env: dict[str, str], cwd: Path, *command: str,
                 keep_stdout: bool = False) -> Minion:
    """``minionize COMMAND...`` in a new session (so that ``os.killpg`` reaches its
    tasks too), stderr in a file of ``cwd``, stdout discarded (or in a file too, with
    ``keep_stdout``)."""
    name = cwd / f"minion-{uuid.uuid4().hex[:8]}"
    err, out = name.with_suffix(".err"), name.with_suffix(".out")
    with open(err, "wb") as stderr, open(out if keep_stdout else os.devnull, "wb") as stdout:
        process = subprocess.Popen(
            [script("minionize"), *command], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, start_new_session=True,
        )
    return Minion(process, err, out if keep_stdout else None)


#: A task that records "param attempt pid" in $OUT (the param is $1, see start_task).
RECORD = 'echo "$1 $MINION_ATTEMPT $$" >> "$OUT"'


def start_task(env: dict[str, str], cwd: Path, task: str, *flags: str) -> Minion:
    """``minionize FLAGS sh -c TASK task PARAM``: the param is $1 of TASK."""
    return start_minion(env, cwd, *flags, "sh", "-c", task, "task")


def records(tmp_path: Path) -> list[tuple[str, int, int]]:
    """(param, attempt, task pid) of every task :data:`RECORD` saw start, in order."""
    path = tmp_path / "out"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        param, attempt, pid = line.rsplit(" ", 2)
        rows.append((param, int(attempt), int(pid)))
    return rows


def kill_leftovers(rows: list[tuple[str, int, int]]) -> None:
    """SIGKILL the tasks of ``rows`` that still run."""
    for _, _, pid in rows:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def drain(engine: Engine, limit: int = 100_000) -> list[Any]:
    """Take and ack everything ``engine`` hands out now, then write the batched acks
    (``engine.flush()``); the params, in order."""
    out: list[Any] = []
    while len(out) < limit:
        batch: Sequence[Delivery] = engine.take(10, 0)
        if not batch:
            break
        for delivery in batch:
            out.append(delivery.param)
            engine.ack(delivery)
    engine.flush()
    return out


@dataclass
class Holder:
    """A process stopped while it held a queue lock; what it printed once resumed."""

    process: subprocess.Popen[str]
    out: str = ""
    err: str = ""


@contextmanager
def stopped_holder(code: str, *args: str) -> Iterator[Holder]:
    """``python -c CODE ARGS``, which prints ``held`` once it holds the queue lock, then
    reads a line: stopped (SIGSTOP) for the body of the ``with``, then resumed, given its
    line and waited for (``out``, ``err``); killed if the body fails."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = Holder(process)
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "held"
        os.kill(process.pid, signal.SIGSTOP)
        yield holder
        os.kill(process.pid, signal.SIGCONT)
        process.stdin.write("go\n")
        process.stdin.flush()
        holder.out, holder.err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``64k``) mounted on ``path`` (made), unmounted at the end;
    skips the test where mounting is not allowed (it needs root)."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                            str(path)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def resize_disk(path: Path, size: str) -> None:
    """Give the :func:`small_disk` on ``path`` more room (``64m``)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


# -- Redis ---------------------------------------------------------------------------------


class RedisServer:
    """A redis-server on 127.0.0.1:port, stopped by its PID.

    Without persistence unless ``aof`` (appendonly yes, appendfsync always, in
    ``directory``); ``password`` sets ``requirepass``. :meth:`kill` and :meth:`start`
    let a test crash and restart it on the same port and directory.
    """

    def __init__(self, port: int, directory: Path, aof: bool = False,
                 password: Optional[str] = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis", "no redis-server binary (apt-get install redis-server)")
        self.binary: str = binary
        self.redis = pytest.importorskip("redis")
        self.port = port
        self.directory = directory
        self.aof = aof
        self.password = password
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: Optional[subprocess.Popen[bytes]] = None
        directory.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                   "--save", "", "--daemonize", "no", "--dir", str(self.directory)]
        if self.aof:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            command += ["--appendonly", "no"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        log = self.directory / "redis.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        client = self.redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"redis-server exited: {log.read_text()}")
            try:
                return bool(client.ping())
            except self.redis.exceptions.ConnectionError:
                return False

        try:
            wait_for(ready, 10, "redis-server to answer PING")
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed but what appendfsync always wrote."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


#: Run in the background by a shell without job control (``cmd &``, nohup), the tests
#: would inherit SIGINT ignored, and so would every minion and pool they start: the tests
#: that press Ctrl-C on them need it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_command_line_log_handler() -> Iterator[None]:
    """A test that runs a command's ``main`` in this process leaves its stderr handler on
    the ``minionize`` logger (a command adds it once per process); it would write to a
    captured stream that is closed by the next test. Each test starts without it."""
    logger = logging.getLogger("minionize")
    before = list(logger.handlers)
    yield
    logger.handlers[:] = before


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (each test uses its own stream)."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_queue(redis_url: str) -> Iterator[RedisEngine]:
    """A redis engine on a fresh stream, opened, as ``minion-queue`` would use it."""
    engine = RedisEngine(url=redis_url, stream=f"test-{uuid.uuid4().hex[:8]}")
    engine.open()
    yield engine
    engine.close()


# -- the Pub/Sub emulator --------------------------------------------------------------------

PUBSUB_PROJECT = "minionize-test"


def find_emulator() -> Optional[str]:
    found = shutil.which("cloud-pubsub-emulator")
    if found:
        return found
    roots = ["/usr/lib/google-cloud-sdk"]
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            root = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=30, check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            root = ""
        if root:
            roots.insert(0, root)
    for root in roots:
        candidate = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if candidate.is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running emulator; PUBSUB_EMULATOR_HOST is set meanwhile."""
    try:
        from google.cloud import pubsub_v1
    except ImportError:
        unavailable("pubsub", "google-cloud-pubsub is not installed (pip install '.[test]')")
    binary = find_emulator()
    if binary is None:
        unavailable("pubsub", "no cloud-pubsub-emulator (gcloud components install pubsub-emulator)")
    if shutil.which("java") is None:
        unavailable("pubsub", "the emulator needs java on PATH")
    port = free_port()
    host = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    with open(log, "wb") as out:
        # The start script execs java: this PID is the emulator's.
        server = subprocess.Popen(
            [binary, "--host=127.0.0.1", f"--port={port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host

    def listening() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the emulator exited: {log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 60, "the Pub/Sub emulator to listen")
        publisher = pubsub_v1.PublisherClient()
        wait_for(
            lambda: list(publisher.list_topics(request={"project": f"projects/{PUBSUB_PROJECT}"},
                                               timeout=5)) is not None,
            30,
            "the Pub/Sub emulator to answer",
        )
        yield host
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def elapsed(since: float) -> float:
    """Seconds since ``since`` (a ``time.monotonic()`` value), for printed figures."""
    return time.monotonic() - since
