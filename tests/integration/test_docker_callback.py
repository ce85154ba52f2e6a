"""The docker callback on a real Docker engine.

A session fixture (``dockerd``, tests/services/docker.py) starts a private ``dockerd``
(its own socket, data and exec roots in a temporary directory, no bridge and no iptables
rules, so the host's network is not touched) and stops it by its PID at the end; this
module imports a tiny image made of busybox-static into it. Every test then checks
that no container is left behind (``docker ps -a`` is empty). The tests run the real
``minionize --docker IMAGE ...`` command with the file
engine, so the outcome is visible in ``<file>.done`` and ``<file>.failed``.

Needs root, ``dockerd`` (Debian ``docker.io``), ``/bin/busybox`` from ``busybox-static``
and the ``docker`` Python package; without them the tests skip (fail under CI=true).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minionize.callbacks.base import Outcome, StopReason, Task
from minionize.engines.base import Delivery
from minionize.errors import CallbackError
from tests.services import script, unavailable, wait_for
from tests.services.docker import DockerEngine, dockerd  # noqa: F401

IMAGE = "minionize-test-busybox:1"
APPLETS = ("sh", "echo", "sleep", "cat", "env", "id", "hostname", "printf", "true", "false",
           "ls", "touch", "test", "seq")


def _static_busybox() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if path and os.path.isfile(path):
            return path
    return None


def _image_tarball(busybox: str) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for directory in ("bin", "tmp", "data"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        with open(busybox, "rb") as handle:
            content = handle.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(content)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(content))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return data.getvalue()


@pytest.fixture(scope="session")
def docker_engine(dockerd: DockerEngine) -> DockerEngine:  # noqa: F811
    """The private dockerd, with a tiny busybox image imported."""
    busybox = _static_busybox()
    if busybox is None:
        unavailable("docker", "busybox not found (apt-get install busybox-static)")
    dockerd.client.api.import_image_from_data(
        _image_tarball(busybox), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1]
    )
    probe = subprocess.run(
        [sys.executable, "-c",
         "import docker,sys; c=docker.from_env(); "
         f"sys.stdout.buffer.write(c.containers.run({IMAGE!r}, ['echo', 'ok'], remove=True))"],
        env={**os.environ, "DOCKER_HOST": dockerd.host}, capture_output=True, timeout=60,
    )
    if probe.stdout.strip() != b"ok":
        unavailable("docker", f"a busybox container does not run: {probe.stderr.decode()[-500:]}")
    return dockerd


@pytest.fixture
def engine(docker_engine: DockerEngine) -> Iterator[DockerEngine]:
    """The engine, checked empty before and after the test: no container is ever left."""
    assert docker_engine.containers() == []
    yield docker_engine
    left = docker_engine.containers()
    for container in left:
        container.remove(force=True)
    assert left == [], f"containers left behind: {[c.name for c in left]}"


def minionize(engine: DockerEngine, cwd: Path, *args: str, timeout: float = 120,
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("minionize"), *args], cwd=cwd, env=engine.env(**env), capture_output=True,
        text=True, timeout=timeout,
    )


def params_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "params"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def done(path: Path) -> list[str]:
    done_path = Path(f"{path}.done")
    if not done_path.exists():
        return []
    return [json.loads(line) for line in done_path.read_text().splitlines() if line.strip()]


def failed(path: Path) -> list[dict[str, Any]]:
    failed_path = Path(f"{path}.failed")
    if not failed_path.exists():
        return []
    return [json.loads(line) for line in failed_path.read_text().splitlines() if line.strip()]


# -- through the command line ----------------------------------------------------------
def test_three_params_run_in_three_containers(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "alpha", "beta", "gamma")
    result = minionize(
        engine, tmp_path, "--docker", IMAGE,
        "sh", "-c", 'echo "hello $1 from $(hostname) param=$MINION_PARAM attempt=$MINION_ATTEMPT"',
        "sh", FILE_PATH=str(params),
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert len(lines) == 3, result.stdout
    for line, word in zip(lines, ("alpha", "beta", "gamma")):
        assert line.startswith(f"hello {word} from "), line
        assert line.endswith(f'param="{word}" attempt=1'), line
    hostnames = {line.split()[3] for line in lines}
    assert len(hostnames) == 3, "each param runs in its own container"
    assert sorted(done(params)) == ["alpha", "beta", "gamma"]


def test_param_alone_is_the_command_of_the_image(engine: DockerEngine, tmp_path: Path) -> None:
    # No command: the param becomes the container's command (the ENTRYPOINT's arguments).
    params = params_file(tmp_path, '["echo", "from", "the param"]')
    result = minionize(engine, tmp_path, "--docker", IMAGE, FILE_PATH=str(params),
                       FILE_DECODER="json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the param\n"


def test_shell_in_the_container_never_reads_a_param(engine: DockerEngine, tmp_path: Path) -> None:
    attacks = ["$(touch /tmp/PWNED)", "it's", '"; touch /tmp/PWNED; "']
    params = params_file(tmp_path, *(json.dumps({"x": a}) for a in attacks))
    result = minionize(
        engine, tmp_path, "--docker", IMAGE, "--shell", "--template",
        "printf '[%s]' '{x}' \"{x}\" {x}; test ! -e /tmp/PWNED && echo",
        FILE_PATH=str(params), FILE_DECODER="json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"[{a}][{a}][{a}]" for a in attacks]


def test_failing_container_is_retried_then_dead_lettered(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "bad")
    result = minionize(
        engine, tmp_path, "--docker", IMAGE, "sh", "-c",
        'echo "attempt $MINION_ATTEMPT of $1" >&2; exit 3', "sh",
        FILE_PATH=str(params), MINION_MAX_ATTEMPTS="2",
    )
    assert result.returncode == 1, result.stderr
    assert "attempt 1 of bad" in result.stderr
    assert "attempt 2 of bad" in result.stderr
    assert "attempt 3" not in result.stderr
    assert done(params) == []
    [letter] = failed(params)
    assert letter["param"] == "bad"
    assert "exit code 3" in json.dumps(letter)


def test_timeout_stops_the_container(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "60")
    start = time.monotonic()
    result = minionize(
        engine, tmp_path, "--docker", IMAGE, "sleep",
        FILE_PATH=str(params), MINION_TASK_TIMEOUT="1", MINION_MAX_ATTEMPTS="1",
        MINION_GRACE_PERIOD="5",
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert elapsed < 20, f"the container was not stopped at the timeout ({elapsed:.1f}s)"
    [letter] = failed(params)
    assert "timed out" in json.dumps(letter)


def _start_minion(engine: DockerEngine, tmp_path: Path, params: Path, command: list[str],
                  grace: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["minionize", "--docker", IMAGE, *command], cwd=tmp_path,
        env=engine.env(FILE_PATH=str(params), MINION_GRACE_PERIOD=grace),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _running(engine: DockerEngine) -> bool:
    return any(c.status == "running" for c in engine.client.containers.list())


def test_sigterm_stops_the_container_and_requeues_the_param(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "60")
    minion = _start_minion(engine, tmp_path, params, ["sleep"], grace="8")
    try:
        wait_for(lambda: _running(engine), 30, "the container to run")
        start = time.monotonic()
        minion.send_signal(signal.SIGTERM)
        wait_for(lambda: engine.containers() == [], 8, "the container to be gone")
        gone_after = time.monotonic() - start
        out, err = minion.communicate(timeout=30)
    finally:
        if minion.poll() is None:
            minion.kill()
    assert minion.returncode == 0, err
    # `sleep` dies on SIGTERM (the init process passes it on): no need to wait for the kill.
    assert gone_after < 5, f"the container took {gone_after:.1f}s to go"
    assert done(params) == [] and failed(params) == [], "the param was released, not settled"
    rerun = minionize(engine, tmp_path, "--docker", IMAGE, "echo", "again", FILE_PATH=str(params))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout == "again 60\n"


def test_sigterm_ignored_container_is_killed_after_the_grace_period(
    engine: DockerEngine, tmp_path: Path
) -> None:
    params = params_file(tmp_path, "60")
    minion = _start_minion(
        engine, tmp_path, params, ["sh", "-c", "trap '' TERM; echo ready; sleep $1", "sh"],
        grace="2",
    )
    try:
        wait_for(lambda: _running(engine), 30, "the container to run")
        start = time.monotonic()
        minion.send_signal(signal.SIGTERM)
        wait_for(lambda: engine.containers() == [], 10, "the container to be gone")
        gone_after = time.monotonic() - start
        _, err = minion.communicate(timeout=30)
    finally:
        if minion.poll() is None:
            minion.kill()
    assert minion.returncode == 0, err
    assert 1.5 < gone_after < 6, f"killed {gone_after:.1f}s after SIGTERM (grace period 2 s)"
    assert done(params) == [] and failed(params) == []


def test_output_saved_per_task_in_the_log_dir(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "ok", "ko")
    logs = tmp_path / "logs"
    result = minionize(
        engine, tmp_path, "--docker", IMAGE, "sh", "-c",
        'echo "out $1"; echo "err $1" >&2; test "$1" = ok', "sh",
        FILE_PATH=str(params), MINION_LOG_DIR=str(logs), MINION_MAX_ATTEMPTS="1",
    )
    assert result.returncode == 1, result.stderr
    assert "out ok" not in result.stdout and "err ok" not in result.stderr
    outs = sorted(p.name for p in logs.iterdir())
    assert len(outs) == 4, outs
    texts = {p.name: p.read_text() for p in logs.iterdir()}
    assert sorted(texts.values()) == ["err ko\n", "err ok\n", "out ko\n", "out ok\n"]
    for name, text in texts.items():
        assert name.endswith(".1.out" if text.startswith("out") else ".1.err"), name
    [letter] = failed(params)
    assert letter["param"] == "ko" and "exit code 1" in letter["reason"]


def test_docker_options_from_the_environment(engine: DockerEngine, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    params = params_file(tmp_path, "one")
    result = minionize(
        engine, tmp_path, "--docker", IMAGE, "sh", "-c",
        'echo "uid=$(id -u) token=$API_TOKEN extra=$EXTRA"; touch /data/"$1"; ls /sys/class/net',
        "sh",
        FILE_PATH=str(params), API_TOKEN="s3cret", UNRELATED="no",
        MINION_DOCKER_VOLUMES=f"{shared}:/data:rw",
        MINION_DOCKER_ENV="API_TOKEN, EXTRA=given, NOT_SET",
        MINION_DOCKER_NETWORK="none", MINION_DOCKER_USER="1234:1234",
        MINION_DOCKER_MEMORY="64m", MINION_DOCKER_CPUS="0.5",
    )
    assert result.returncode == 0, result.stderr
    first, *interfaces = result.stdout.splitlines()
    assert first == "uid=1234 token=s3cret extra=given"
    assert interfaces == ["lo"], "network none: only the loopback interface"
    assert (shared / "one").exists()
    assert (shared / "one").stat().st_uid == 1234


def test_unreachable_engine_is_a_clear_error(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "1")
    result = minionize(engine, tmp_path, "--docker", IMAGE, "echo",
                       FILE_PATH=str(params), DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert result.returncode == 2
    assert "unix:///nonexistent/docker.sock" in result.stderr
    assert done(params) == [] and failed(params) == []


def test_missing_image_is_a_clear_error(engine: DockerEngine, tmp_path: Path) -> None:
    params = params_file(tmp_path, "1")
    result = minionize(engine, tmp_path, "--docker", "no-such-image:1", "echo",
                       FILE_PATH=str(params), MINION_DOCKER_PULL="never")
    assert result.returncode == 2
    assert "no-such-image:1" in result.stderr and "not on the Docker engine" in result.stderr
    assert done(params) == [] and failed(params) == []


# -- through the Python API ------------------------------------------------------------
def _callback(engine: DockerEngine, cls: type[Any] | None = None, **kwargs: Any) -> Any:
    from minionize.callbacks.docker.callback import DockerCallback

    callback = (cls or DockerCallback)(IMAGE, docker_env={"DOCKER_HOST": engine.host}, **kwargs)
    callback.setup()
    return callback


def test_original_api_to_kwargs_override(engine: DockerEngine, capfd: pytest.CaptureFixture[str]) -> None:
    from minionize.callbacks.docker.callback import DockerCallback

    class Mine(DockerCallback):
        def to_kwargs(self, param: Any) -> dict[str, Any]:
            return {"command": ["sh", "-c", "echo $GREETING $MINION_PARAM"],
                    "environment": ["GREETING=bonjour"], "remove": False}

    callback = _callback(engine, Mine)
    try:
        result = callback.run(Task(Delivery({"x": 1}, "p1")))
    finally:
        callback.teardown()
    assert result.outcome is Outcome.OK, result.reason
    assert capfd.readouterr().out == 'bonjour {"x": 1}\n'


def test_failure_result_carries_the_stderr_tail(engine: DockerEngine,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    callback = _callback(engine, command=["sh", "-c", 'seq 1 50 >&2; echo out; exit "$1"', "sh"])
    try:
        result = callback.run(Task(Delivery("4", "p1")))
    finally:
        callback.teardown()
    assert result.outcome is Outcome.FAILED and result.exit_code == 4
    assert result.reason == "exit code 4"
    assert result.stderr_tail.splitlines() == [str(n) for n in range(31, 51)]
    captured = capfd.readouterr()
    assert captured.out == "out\n"
    assert captured.err.splitlines() == [str(n) for n in range(1, 51)]


def test_stop_before_the_container_exists(engine: DockerEngine) -> None:
    callback = _callback(engine, command=["sleep"])
    try:
        task = Task(Delivery("30", "p1"))
        callback.terminate(task)  # before run: harmless, and the container never starts
        callback.kill(task)
        result = callback.run(task)
        assert result.outcome is Outcome.FAILED
        assert "before it started" in result.reason
        late = Task(Delivery("30", "p2"), stop_reason=StopReason.SHUTDOWN)
        assert callback.run(late).outcome is Outcome.FAILED
    finally:
        callback.teardown()


def test_kill_from_another_thread_and_after_the_end(engine: DockerEngine,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    # The container says when it gets SIGTERM, and goes on: only the kill ends it.
    script = "trap 'echo got TERM' TERM; echo ready; while :; do sleep 1; done"
    callback = _callback(engine, command=["sh", "-c", script])
    output: list[str] = []

    def said(line: str) -> bool:
        output.append(capfd.readouterr().out)
        return f"{line}\n" in "".join(output)

    try:
        task = Task(Delivery("30", "p1"))
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(callback.run(task)))
        worker.start()
        wait_for(lambda: said("ready"), 30, "the container to run")
        callback.terminate(task)
        wait_for(lambda: said("got TERM"), 10, "the container to get SIGTERM")
        assert _running(engine) and worker.is_alive()  # it ignored it
        callback.kill(task)
        worker.join(15)
        assert not worker.is_alive()
        [result] = results
        assert result.outcome is Outcome.FAILED
        assert result.exit_code == 137 and "SIGKILL" in result.reason
        callback.terminate(task)  # after the end: harmless
        callback.kill(task)
    finally:
        callback.teardown()


def test_setup_on_an_unreachable_engine_names_docker_host(tmp_path: Path) -> None:
    pytest.importorskip("docker")
    from minionize.callbacks.docker.callback import DockerCallback

    host = f"unix://{tmp_path}/none.sock"
    callback = DockerCallback(IMAGE, docker_env={"DOCKER_HOST": host})
    with pytest.raises(CallbackError, match=host):
        callback.setup()


def test_every_line_a_container_prints_arrives_once(engine: DockerEngine, tmp_path: Path) -> None:
    """Output written while the engine sets up the attach must not arrive twice (an attach
    that also replays the log buffer duplicated lines under load)."""
    count = 40
    params = params_file(tmp_path, *(str(i) for i in range(count)))
    result = minionize(engine, tmp_path, "--docker", IMAGE, "-j", "4", "echo",
                       FILE_PATH=str(params))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines(), key=int) == [str(i) for i in range(count)]
