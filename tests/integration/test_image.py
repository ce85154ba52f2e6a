"""The project's Dockerfile, built and run as the image it is meant to be.

Nothing is pulled: the private Docker engine (tests/services/docker.py) gets a Debian
bookworm base image made locally by ``debootstrap`` (cached as a tarball between runs),
and the build runs with ``--network=none``, pip installing from a ``wheels/`` directory
downloaded on the host (``--build-arg OFFLINE=1``). Then containers run ``minionize`` as
their ENTRYPOINT: on a sweep queue in a mounted volume, and on a Redis stream of the
host (host networking: the private engine has no bridge).

Run alone: ``python -m pytest -s tests/integration/test_image.py`` (``-s`` shows the
image's size).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port, script, unavailable, wait_for
from tests.services.docker import DockerEngine, debian_base_image, dockerd  # noqa: F401

pytestmark = pytest.mark.service("docker")

ROOT = Path(__file__).resolve().parents[2]
TAG = "minionize-test:image"
EXTRAS = "redis"
#: What pip needs to build and install minionize[redis] without an index
#: (async-timeout: redis needs it on bookworm's Python 3.11.2).
WHEELS = ["setuptools>=64", "wheel", "python-dotenv", "filelock", "redis", "async-timeout"]


def docker(engine: DockerEngine, *args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker command, as a user types it, on the private engine."""
    cli = shutil.which("docker")
    if cli is None:
        unavailable("docker", "the docker command is missing (apt-get install docker.io)")
    result = subprocess.run([cli, *args], env=engine.env(), capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {result.returncode}\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


def build_context(into: Path) -> Path:
    """The files the Dockerfile takes (as .dockerignore says), and wheels/ for pip."""
    context = into / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "minionize", context / "minionize",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--only-binary=:all:", "--dest", str(context / "wheels"), *WHEELS],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    if download.returncode != 0:
        unavailable("docker image", f"pip download of {WHEELS} failed: {download.stderr[-1500:]}")
    return context


@pytest.fixture(scope="session")
def image(dockerd: DockerEngine) -> Iterator[str]:  # noqa: F811
    base = debian_base_image(dockerd)
    work = Path(tempfile.mkdtemp(prefix="mzimage-"))
    try:
        context = build_context(work)
        docker(dockerd, "build", "--network=none", "--build-arg", f"BASE={base}",
               "--build-arg", f"EXTRAS={EXTRAS}", "--build-arg", "OFFLINE=1",
               "-t", TAG, str(context), timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = dockerd.client.images.get(TAG).attrs["Size"]
    base_size = dockerd.client.images.get(base).attrs["Size"]
    print(f"\nimage {TAG} (EXTRAS={EXTRAS}, on Debian bookworm): {size / 1e6:.0f} MB, "
          f"of which the base image {base_size / 1e6:.0f} MB")
    yield TAG


@pytest.fixture
def engine(dockerd: DockerEngine) -> Iterator[DockerEngine]:  # noqa: F811
    """The engine, with no container left behind by the test."""
    yield dockerd
    left = dockerd.containers()
    for container in left:
        container.remove(force=True)
    assert left == [], f"containers left behind: {[c.name for c in left]}"


def queue_dir(tmp_path: Path, *params: str) -> Path:
    """A sweep queue with ``params``, in a directory the image's user (1000) owns."""
    q = tmp_path / "q"
    q.mkdir()
    subprocess.run([script("minion-queue"), "fill", *params], cwd=q, check=True,
                   capture_output=True, env={**os.environ, "MINION_ENGINE": "sweep"})
    for path in [q, *q.rglob("*")]:
        os.chown(path, 1000, 1000)
    return q


def queue(q: Path, *args: str) -> Any:
    """``minion-queue ARGS --json`` on the host, parsed."""
    result = subprocess.run([script("minion-queue"), *args, "--json"], cwd=q, check=True,
                            capture_output=True, text=True,
                            env={**os.environ, "MINION_ENGINE": "sweep"})
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if args[0] == "status" else lines


def test_the_image_is_minionize_run_by_a_non_root_user(engine: DockerEngine, image: str) -> None:
    config = engine.client.images.get(image).attrs["Config"]
    assert config["Entrypoint"] == ["minionize"]
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGTERM"
    assert config["WorkingDir"] == "/home/minion"
    version = docker(engine, "run", "--rm", image, "--version").stdout
    assert version.startswith("minionize ")


def test_a_container_drains_a_sweep_queue_on_a_volume(engine: DockerEngine, image: str,
                                                      tmp_path: Path) -> None:
    q = queue_dir(tmp_path, "alpha", "beta", "gamma")
    result = docker(engine, "run", "--rm", "-v", f"{q}:/home/minion/q", "-w", "/home/minion/q",
                    image, "echo", "hello")
    assert sorted(result.stdout.splitlines()) == ["hello alpha", "hello beta", "hello gamma"]
    status = queue(q, "status")
    assert (status["done"], status["todo"], status["in_flight"]) == (3, 0, 0)

    # The tasks ran as the image's user, not as root.
    (tmp_path / "again").mkdir()
    q2 = queue_dir(tmp_path / "again", "x")
    result = docker(engine, "run", "--rm", "-v", f"{q2}:/home/minion/q", "-w", "/home/minion/q",
                    image, "sh", "-c", 'echo "$1 $(id -un) $(id -u)"', "sh")
    assert result.stdout == "x minion 1000\n"


def test_docker_stop_mid_task_gives_the_params_back_uncounted(engine: DockerEngine, image: str,
                                                              tmp_path: Path) -> None:
    q = queue_dir(tmp_path, "one", "two")
    name = f"minion-{uuid.uuid4().hex[:8]}"
    docker(engine, "run", "-d", "--name", name, "-e", "MINION_GRACE_PERIOD=2",
           "-v", f"{q}:/home/minion/q", "-w", "/home/minion/q", image, "-j", "2",
           "sh", "-c", 'echo "$1" > "started.$1"; exec sleep 60', "sh")
    try:
        wait_for(lambda: {p.name for p in q.glob("started.*")} == {"started.one", "started.two"},
                 60, "both tasks to start in the container")
        assert queue(q, "status")["in_flight"] == 2
        docker(engine, "stop", "-t", "20", name, timeout=60)
        state = engine.client.containers.get(name).attrs["State"]
        logs = docker(engine, "logs", name).stderr
        assert state["ExitCode"] == 0, logs  # a graceful stop, not a SIGKILL after -t
    finally:
        docker(engine, "rm", "-f", name, check=False)
    status = queue(q, "status")
    assert (status["todo"], status["in_flight"], status["done"]) == (2, 0, 0)

    result = docker(engine, "run", "--rm", "-v", f"{q}:/home/minion/q", "-w", "/home/minion/q",
                    image, "sh", "-c", 'echo "$1 $MINION_ATTEMPT"', "sh")
    assert sorted(result.stdout.splitlines()) == ["one 1", "two 1"]  # the stop did not count
    assert queue(q, "status")["done"] == 2


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis", "no redis-server binary (apt-get install redis-server)")
    port = free_port()
    with open(tmp_path / "redis.log", "wb") as log:
        proc = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=port)

    def ready() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        wait_for(ready, 10, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_a_container_drains_a_redis_stream_on_the_host(engine: DockerEngine, image: str,
                                                       redis_url: str) -> None:
    from minionize.engines.redis.engine import RedisEngine

    stream = f"image-{uuid.uuid4().hex[:8]}"
    filler = RedisEngine(url=redis_url, stream=stream)
    filler.create()
    filler.open()
    try:
        assert filler.fill(["alpha", "beta", "gamma"])[0] == 3
        result = docker(engine, "run", "--rm", "--network", "host",
                        "-e", "MINION_ENGINE=redis", "-e", f"MINION_REDIS_URL={redis_url}",
                        "-e", f"MINION_REDIS_STREAM={stream}", "-e", "MINION_IDLE_TIMEOUT=2",
                        image, "echo", "hello")
        assert sorted(result.stdout.splitlines()) == ["hello alpha", "hello beta", "hello gamma"]
        status = filler.status()
        assert (status["done"], status["todo"], status["in_flight"]) == (3, 0, 0)
    finally:
        filler.close()
