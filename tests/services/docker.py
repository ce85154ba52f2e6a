"""A private Docker engine for the tests, and a Debian base image made without pulling.

``dockerd`` (session fixture) starts a ``dockerd`` of its own: its socket, data and exec
roots in a temporary directory, no bridge and no iptables rules (the host's network is
not touched; containers use ``--network host`` or none), stopped by its PID at the end.
Needs root, ``dockerd`` (Debian ``docker.io``) and the ``docker`` Python package;
without them the tests skip (fail under CI=true).

:func:`debian_base_image` imports a Debian bookworm root file system with ``python3``
and ``python3-venv`` as an image. The machines reach Debian's packages but no image
registry, so the root file system is made by ``debootstrap`` from Debian's packages
(about a minute) and kept as a tarball in ``~/.cache/minionize-tests/``
(``$XDG_CACHE_HOME`` is honoured); later sessions only import it (seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import unavailable

BASE_IMAGE = "minionize-test-base:bookworm"
SUITE = "bookworm"
DEBOOTSTRAP_TIMEOUT = 900.0
#: Trimmed from the root file system: package lists and caches, documentation.
TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
        "usr/share/info", "usr/share/locale")


@dataclass
class DockerEngine:
    host: str
    client: Any
    log_path: Path
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for ``minionize`` (or ``docker``) talking to this engine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINION_", "FILE_"))}
        env.update(DOCKER_HOST=self.host, MINION_ENGINE="file", PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def containers(self) -> list[Any]:
        """Every container; one removed between the list and its inspection is left out
        (a test asks while minions remove theirs: a 404 there is not the test's failure)."""
        return list(self.client.containers.list(all=True, ignore_removed=True))


def start_dockerd() -> tuple[subprocess.Popen[bytes], DockerEngine]:
    """Start a private dockerd and wait for it; :func:`unavailable` if it cannot run."""
    try:
        import docker
    except ImportError:
        unavailable("docker", "the docker Python package is not installed (pip install docker)")
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    if dockerd is None:
        unavailable("docker", "dockerd not found (apt-get install docker.io)")
    if os.geteuid() != 0:
        unavailable("docker", "starting a private dockerd needs root")
    # A short path: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="mzdockerd-"))
    sock = root / "docker.sock"
    log_path = root / "dockerd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                dockerd, "--host", f"unix://{sock}", "--data-root", str(root / "data"),
                "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
                "--bridge=none", "--iptables=false", "--ip6tables=false",
                "--ip-forward=false", "--ip-masq=false",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    host = f"unix://{sock}"
    client = None
    try:
        deadline = time.monotonic() + 30
        while client is None:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                unavailable("docker", f"dockerd exited with {proc.returncode}: {tail}")
            if sock.exists():
                try:
                    client = docker.from_env(environment={"DOCKER_HOST": host}, timeout=120)
                    client.ping()
                except docker.errors.DockerException:
                    client = None
            if client is None:
                if time.monotonic() > deadline:
                    unavailable("docker", f"dockerd did not answer on {host} within 30 s")
                time.sleep(0.05)
    except BaseException:
        stop_dockerd(proc, root)
        raise
    return proc, DockerEngine(host, client, log_path, root)


def stop_dockerd(proc: subprocess.Popen[bytes], root: Path) -> None:
    proc.terminate()  # dockerd stops its containers and containerd (about 2 s)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerEngine]:
    """A private Docker engine for the whole session."""
    proc, engine = start_dockerd()
    try:
        yield engine
    finally:
        engine.client.close()
        stop_dockerd(proc, engine.root)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "minionize-tests"


def _debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else the default."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def debian_rootfs_tarball() -> Path:
    """A tarball of a minimal Debian bookworm with python3 and python3-venv (cached)."""
    tarball = cache_dir() / f"debian-{SUITE}-python3.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    if debootstrap is None:
        unavailable("docker image", "debootstrap not found (apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mzrootfs-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        try:
            result = subprocess.run(
                [debootstrap, "--variant=minbase", "--include=python3,python3-venv",
                 SUITE, str(rootfs), _debian_mirror()],
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=DEBOOTSTRAP_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            unavailable("docker image", f"debootstrap took more than {DEBOOTSTRAP_TIMEOUT:g}s")
        if result.returncode != 0:
            unavailable("docker image", f"debootstrap failed: {(result.stdout + result.stderr)[-2000:]}")
        for part in TRIM:
            target = rootfs / part
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
                       check=True, stdin=subprocess.DEVNULL)
        partial.replace(tarball)  # whole or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def debian_base_image(engine: DockerEngine) -> str:
    """``minionize-test-base:bookworm`` on ``engine``, imported from the cached tarball."""
    tarball = debian_rootfs_tarball()
    with open(tarball, "rb") as data:
        engine.client.api.import_image_from_data(
            data, repository=BASE_IMAGE.split(":")[0], tag=BASE_IMAGE.split(":")[1]
        )
    return BASE_IMAGE
