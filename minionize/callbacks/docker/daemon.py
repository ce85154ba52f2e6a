"""The docker callback's connection to the Docker daemon (``DOCKER_HOST``).

:class:`DockerDaemon` holds two docker-py clients on the same daemon: one for requests,
which time out after :data:`REQUEST_TIMEOUT`, and one for the containers' output
streams and waits, which must never time out (a task may be silent for hours). Errors
become :class:`~minionize.errors.CallbackError` messages that name the daemon and the fix.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ...errors import CallbackError, MissingExtraError

log = logging.getLogger("minionize.docker")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: Seconds for one request to the Docker daemon (the output stream has no limit).
REQUEST_TIMEOUT = 60.0
#: Seconds a container's removal is tried again while the daemon says it is busy.
REMOVE_PATIENCE = 10.0


def import_docker() -> Any:
    """The ``docker`` package, or MissingExtraError naming the extra to install."""
    try:
        import docker
    except ImportError:
        raise MissingExtraError("the docker callback", "docker", "docker") from None
    return docker


def short_error(exc: BaseException) -> str:
    """The first line of what the Docker daemon said (at most 300 characters)."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class DockerDaemon:
    """The clients of one Docker daemon, opened on first use, closed by :meth:`close`.
    (A daemon, not an :class:`~minionize.engines.base.Engine`: Docker calls it the
    Docker Engine, and its messages say so.)"""

    def __init__(self, docker_env: Mapping[str, str], pool_size: int) -> None:
        #: The docker package (its ``errors`` module names what the daemon answers).
        self.docker = import_docker()
        self.errors = self.docker.errors
        self._env = dict(docker_env)
        self._pool_size = pool_size
        self._client: Any = None
        self._stream_client: Any = None
        self._lock = threading.Lock()

    def host(self) -> str:
        """The Docker daemon this talks to, as ``DOCKER_HOST`` says."""
        host = self._env.get("DOCKER_HOST")
        return host or f"{DEFAULT_DOCKER_HOST} (DOCKER_HOST is not set)"

    def connect(self) -> Any:
        """The request client, connected and pinged (CallbackError if the daemon cannot be
        reached); the stream client is ready too (:attr:`streams`)."""
        with self._lock:
            if self._client is not None:
                return self._client
            try:
                client = self.docker.from_env(
                    environment=self._env,
                    timeout=REQUEST_TIMEOUT,
                    max_pool_size=self._pool_size,
                )
                client.ping()
                self._stream_client = self.docker.from_env(
                    environment=self._env,
                    timeout=None,
                    version=client.api.api_version,
                    max_pool_size=self._pool_size,
                )
            except (self.errors.DockerException, OSError) as exc:
                raise CallbackError(
                    f"cannot reach the Docker engine at {self.host()}: {short_error(exc)}; "
                    "start dockerd, or set DOCKER_HOST to its socket "
                    "(e.g. unix:///var/run/docker.sock or tcp://host:2375)"
                ) from None
            self._client = client
            return client

    @property
    def streams(self) -> Any:
        """The client without timeout, for output streams and waits (after :meth:`connect`)."""
        return self._stream_client

    def close(self) -> None:
        """Close both clients (best effort); the next :meth:`connect` opens new ones."""
        with self._lock:
            for client in (self._client, self._stream_client):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # closing is best effort
                        pass
            self._client = self._stream_client = None

    def ensure_image(self, image: str, pull: str) -> None:
        """Make sure ``image`` is on the daemon, pulling it as ``pull`` (a policy of
        ``MINION_DOCKER_PULL``) allows; CallbackError saying how to get it otherwise."""
        client = self.connect()
        errors = self.errors
        if pull != "always":
            try:
                client.images.get(image)
                return
            except errors.ImageNotFound:
                if pull == "never":
                    raise CallbackError(
                        f"the image {image!r} is not on the Docker engine at "
                        f"{self.host()}: build it there (docker build -t {image} .) "
                        "or pull it, or set MINION_DOCKER_PULL=missing"
                    ) from None
            except errors.APIError as exc:
                raise CallbackError(
                    f"cannot inspect the image {image!r}: {short_error(exc)}"
                ) from None
        repository, tag = self.docker.utils.parse_repository_tag(image)
        try:
            client.images.pull(repository, tag=tag or "latest")
        except (errors.DockerException, OSError) as exc:
            raise CallbackError(
                f"the image {image!r} is not on the Docker engine at {self.host()} "
                f"and pulling it failed: {short_error(exc)}; build it there "
                f"(docker build -t {image} .) or pull it first"
            ) from None

    def signal(self, container_id: str, signal_name: str) -> None:
        """Send ``signal_name`` to a container; nothing if it is gone or not running, or
        if the daemon was never reached."""
        client = self._client
        if client is None:
            return
        try:
            client.api.kill(container_id, signal=signal_name)
        except self.errors.NotFound:
            pass  # gone already
        except self.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running any more
                raise

    def remove(self, container_id: str) -> None:
        """Remove a container and its anonymous volumes, trying again while the daemon is
        busy; a failure is logged, never raised."""
        errors = self.errors
        deadline = time.monotonic() + REMOVE_PATIENCE
        while True:
            try:
                self._client.api.remove_container(container_id, v=True, force=True)
                return
            except errors.NotFound:
                return
            except (errors.DockerException, OSError) as exc:
                # 409: a removal is already in progress, or the daemon is busy: try again.
                if time.monotonic() >= deadline:
                    log.warning("could not remove container %s: %s", container_id[:12], exc)
                    print(
                        "minionize: could not remove container "
                        f"{container_id[:12]}: {short_error(exc)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
                time.sleep(0.2)

