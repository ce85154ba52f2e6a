"""The docker callback: run each param in its own container.

``minionize --docker IMAGE [COMMAND ARGS...]`` (or ``MINION_CALLBACK=docker`` with
``MINION_DOCKER_IMAGE``). The param goes into the container's command by the rules of
the process callback (appended, ``{}``, ``--template``); with no command at all, the
param alone becomes the container's command, i.e. the arguments of the image's
ENTRYPOINT. The container also gets ``MINION_PARAM`` (JSON), ``MINION_PARAM_ID`` and
``MINION_ATTEMPT`` in its environment.

The container's exit code is the outcome. Its output goes where a process's would: to
the minion's stdout and stderr, or under ``MINION_LOG_DIR`` per task. The container is
removed whatever happens (success, failure, exception, timeout, shutdown); only a
SIGKILLed minion can leave one behind, labelled ``minionize.minion``.

Stopping works like ``docker stop`` split in two: :meth:`DockerCallback.terminate` sends
the image's stop signal (SIGTERM by default) and the minion's monitor calls
:meth:`DockerCallback.kill` after ``MINION_GRACE_PERIOD``. Containers run with an init
process (``docker run --init``) by default, so that a program that does not handle
SIGTERM itself dies on it as it would outside a container (PID 1 ignores it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Optional

from ..errors import CallbackError, ConfigError, MissingExtraError
from .base import Callback, Outcome, Result, Task
from .command import CommandBuilder, ParamError, shell_line
from .process import (
    STDERR_TAIL_BYTES,
    STDERR_TAIL_LINES,
    log_paths,
    param_json,
)

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("minionize.docker")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: Seconds for one request to the Docker engine (the output stream has no limit).
REQUEST_TIMEOUT = 60.0
PULL_POLICIES = ("missing", "never", "always")

#: Keys of ``containers.run`` that make no sense here: the callback always creates a
#: detached container, streams its output and removes it itself.
_RUN_ONLY_KEYS = ("detach", "remove", "auto_remove", "stdout", "stderr", "stream")

_VOLUME_MODES = frozenset({"ro", "rw", "z", "Z"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_OUTPUT_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Running:
    """``task.handle`` while the container exists (it has been started)."""

    container_id: str
    stop_signal: str


#: ``task.handle`` when a stop was asked before the container started: never start it.
_STOP_BEFORE_START = "stop-before-start"
#: ``task.handle`` once the container is gone.
_GONE = "gone"


def _import_docker() -> Any:
    try:
        import docker
    except ImportError:
        raise MissingExtraError("the docker callback", "docker", "docker") from None
    return docker


class DockerCallback(Callback):
    """Run a container of ``image`` per param.

    ``command`` and ``template`` place the param as for a process (see
    :mod:`minionize.callbacks.command`). ``options`` are extra keyword arguments of
    docker-py's ``containers.create`` (``volumes``, ``environment``, ``network_mode``,
    ``nano_cpus``, ``mem_limit``, ``user``, ``init``...).

    Subclass and override :meth:`to_kwargs` to decide yourself how a param becomes a
    container, as with the original ``DockerCallback(image)``: what it returns is laid
    over ``options``; the minion's variables are added to its ``environment``.
    """

    def __init__(
        self,
        image: str,
        command: Sequence[str] = (),
        template: Optional[str] = None,
        *,
        shell: bool = False,
        log_dir: Optional[str] = None,
        pull: str = "missing",
        docker_env: Optional[Mapping[str, str]] = None,
        concurrency: int = 1,
        **options: Any,
    ) -> None:
        self.docker = _import_docker()
        if not image:
            raise ConfigError("the docker callback needs an image: --docker IMAGE")
        if pull not in PULL_POLICIES:
            choices = ", ".join(PULL_POLICIES)
            raise ConfigError(f"MINION_DOCKER_PULL={pull!r} is not one of {choices}")
        self.image = image
        self.command = [command] if isinstance(command, str) else list(command)
        self.template = template
        self.shell = shell
        self.builder = CommandBuilder(self.command, template, shell)
        self.log_dir = log_dir
        self.pull = pull
        self.options: dict[str, Any] = {"init": True, **options}
        self._docker_env = dict(os.environ if docker_env is None else docker_env)
        self._pool_size = max(10, 2 * concurrency + 2)
        self._client: Any = None
        self._stream_client: Any = None
        self._client_lock = threading.Lock()
        self._minion = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def from_settings(
        cls, settings: Settings, image: Optional[str], command: Sequence[str]
    ) -> DockerCallback:
        """Build the callback from validated settings and the ``MINION_DOCKER_*``
        variables (read through ``settings.env``: errors name the variable)."""
        env = settings.env
        image = image or env.required(
            "MINION_DOCKER_IMAGE",
            "set it to the image that runs each param (or give --docker IMAGE)",
        )
        if command and settings.template:
            raise ConfigError(
                "give the container's command either after --docker IMAGE or in "
                "--template/MINION_TEMPLATE, not both"
            )
        options: dict[str, Any] = {}
        volumes = parse_volumes(env.str("MINION_DOCKER_VOLUMES"))
        if volumes:
            options["volumes"] = volumes
        passed = passthrough_environment(env.str("MINION_DOCKER_ENV"), env.values)
        if passed:
            options["environment"] = passed
        network = env.str("MINION_DOCKER_NETWORK")
        if network:
            options["network_mode"] = network
        cpus = parse_cpus(env.str("MINION_DOCKER_CPUS"))
        if cpus is not None:
            options["nano_cpus"] = cpus
        memory = parse_memory(env.str("MINION_DOCKER_MEMORY"))
        if memory is not None:
            options["mem_limit"] = memory
        user = env.str("MINION_DOCKER_USER")
        if user:
            options["user"] = user
        options["init"] = env.bool("MINION_DOCKER_INIT", True)
        try:
            return cls(
                image,
                command,
                settings.template,
                shell=settings.shell,
                log_dir=settings.log_dir,
                pull=env.choice("MINION_DOCKER_PULL", "missing", PULL_POLICIES),
                docker_env=env.values,
                concurrency=settings.concurrency,
                **options,
            )
        except ValueError as exc:
            raise ConfigError(f"MINION_TEMPLATE: {exc}") from None

    # -- what to run -------------------------------------------------------------------
    def to_argv(self, param: Any) -> list[str]:
        """The container's command for ``param`` (raises CommandLineError or ParamError
        when it cannot: see :mod:`minionize.callbacks.command`)."""
        return self.builder.argv(param)

    def to_kwargs(self, param: Any) -> dict[str, Any]:
        """Keyword arguments of ``containers.create`` for ``param``, laid over
        ``options``. By default: the command, built as for a process."""
        return {"command": self.to_argv(param)}

    def create_kwargs(self, task: Task) -> dict[str, Any]:
        """Everything given to ``containers.create`` for this task."""
        delivery = task.delivery
        kwargs = {**self.options, **self.to_kwargs(delivery.param)}
        for key in _RUN_ONLY_KEYS:
            kwargs.pop(key, None)
        environment = {
            **_environment_dict(self.options.get("environment")),
            **_environment_dict(kwargs.get("environment")),
            "MINION_PARAM": param_json(delivery.param),
            "MINION_PARAM_ID": str(delivery.id),
            "MINION_ATTEMPT": str(delivery.attempt),
        }
        kwargs["environment"] = environment
        kwargs["labels"] = {
            **_labels_dict(kwargs.get("labels")),
            "minionize.minion": self._minion,
            "minionize.param-id": str(delivery.id)[:1000],
            "minionize.attempt": str(delivery.attempt),
        }
        kwargs["detach"] = True
        return kwargs

    def describe(self, param: Any) -> str:
        try:
            kwargs = {**self.options, **self.to_kwargs(param)}
        except ParamError as exc:
            return f"# {exc}"  # names the param, abbreviated
        words = ["docker", "run", "--rm"]
        if kwargs.get("init"):
            words.append("--init")
        for volume in kwargs.get("volumes") or ():
            words += ["-v", str(volume)]
        for name in _environment_dict(kwargs.get("environment")):
            words += ["-e", name]
        for key, flag in (("network_mode", "--network"), ("user", "--user"),
                          ("mem_limit", "--memory")):
            if kwargs.get(key):
                words += [flag, str(kwargs[key])]
        if kwargs.get("nano_cpus"):
            words += ["--cpus", f"{kwargs['nano_cpus'] / 1e9:g}"]
        words.append(self.image)
        command = kwargs.get("command")
        if isinstance(command, str):
            return shell_line(words) + " " + command
        return shell_line([*words, *(command or ())])

    # -- lifecycle ---------------------------------------------------------------------
    def docker_host(self) -> str:
        """The Docker engine this callback talks to, as ``DOCKER_HOST`` says."""
        host = self._docker_env.get("DOCKER_HOST")
        return host or f"{DEFAULT_DOCKER_HOST} (DOCKER_HOST is not set)"

    def setup(self) -> None:
        """Reach the Docker engine and make sure the image is there."""
        client = self._connect()
        if self.log_dir:
            try:
                os.makedirs(self.log_dir, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"MINION_LOG_DIR={self.log_dir!r} cannot be created: {exc}"
                ) from None
        self._ensure_image(client)

    def teardown(self) -> None:
        with self._client_lock:
            for client in (self._client, self._stream_client):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # closing is best effort
                        pass
            self._client = self._stream_client = None

    def _connect(self) -> Any:
        with self._client_lock:
            if self._client is not None:
                return self._client
            errors = self.docker.errors
            try:
                client = self.docker.from_env(
                    environment=self._docker_env,
                    timeout=REQUEST_TIMEOUT,
                    max_pool_size=self._pool_size,
                )
                client.ping()
                # The output streams must never time out: a task may be silent for hours.
                self._stream_client = self.docker.from_env(
                    environment=self._docker_env,
                    timeout=None,
                    version=client.api.api_version,
                    max_pool_size=self._pool_size,
                )
            except (errors.DockerException, OSError) as exc:
                raise CallbackError(
                    f"cannot reach the Docker engine at {self.docker_host()}: {_short(exc)}; "
                    "start dockerd, or set DOCKER_HOST to its socket "
                    "(e.g. unix:///var/run/docker.sock or tcp://host:2375)"
                ) from None
            self._client = client
            return client

    def _ensure_image(self, client: Any) -> None:
        errors = self.docker.errors
        if self.pull != "always":
            try:
                client.images.get(self.image)
                return
            except errors.ImageNotFound:
                if self.pull == "never":
                    raise CallbackError(
                        f"the image {self.image!r} is not on the Docker engine at "
                        f"{self.docker_host()}: build it there (docker build -t {self.image} .) "
                        "or pull it, or set MINION_DOCKER_PULL=missing"
                    ) from None
            except errors.APIError as exc:
                raise CallbackError(
                    f"cannot inspect the image {self.image!r}: {_short(exc)}"
                ) from None
        repository, tag = self.docker.utils.parse_repository_tag(self.image)
        try:
            client.images.pull(repository, tag=tag or "latest")
        except (errors.DockerException, OSError) as exc:
            raise CallbackError(
                f"the image {self.image!r} is not on the Docker engine at {self.docker_host()} "
                f"and pulling it failed: {_short(exc)}; build it there "
                f"(docker build -t {self.image} .) or pull it first"
            ) from None

    # -- running -----------------------------------------------------------------------
    def run(self, task: Task) -> Result:
        delivery = task.delivery
        try:
            kwargs = self.create_kwargs(task)
        except ParamError as exc:
            return Result(Outcome.REJECTED, reason=str(exc))
        if _stop_asked(task):
            return Result(Outcome.FAILED, reason="stopped before it started")
        client = self._connect()
        errors = self.docker.errors
        out_path = err_path = None
        if self.log_dir:
            out_path, err_path = log_paths(self.log_dir, str(delivery.id), delivery.attempt)
        container_id: Optional[str] = None
        try:
            try:
                container = client.containers.create(self.image, **kwargs)
            except errors.ImageNotFound:
                return Result(
                    Outcome.FAILED,
                    reason=f"the image {self.image!r} is not on the Docker engine at "
                    f"{self.docker_host()}",
                )
            except errors.APIError as exc:
                return Result(Outcome.FAILED, reason=f"cannot create the container: {_short(exc)}")
            container_id = container.id
            stop_signal = container.attrs.get("Config", {}).get("StopSignal") or "SIGTERM"
            with task.lock:
                # Under the lock: a stop asked from now on finds the container running.
                if _stop_asked(task):
                    return Result(Outcome.FAILED, reason="stopped before it started")
                stream = self._stream_client.api.attach(
                    container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True
                )
                try:
                    container.start()
                except errors.APIError as exc:
                    stream.close()
                    return Result(
                        Outcome.FAILED,
                        reason=f"the container could not start: {_short(exc)}",
                        exit_code=127 if "not found" in str(exc) else 126,
                    )
                task.handle = _Running(container_id, stop_signal)
            try:
                with _Sinks(out_path, err_path) as sinks:
                    for out, err in stream:
                        sinks.write(out, err)
                    tail = sinks.tail()
            finally:
                stream.close()
            status = self._stream_client.api.wait(container_id)
        finally:
            with task.lock:
                task.handle = _GONE
            if container_id is not None:
                self._remove(container_id)
        code = int(status.get("StatusCode", -1))
        if code == 0:
            return Result(Outcome.OK, exit_code=0, stdout_path=out_path, stderr_path=err_path)
        error = (status.get("Error") or {}).get("Message")
        return Result(
            Outcome.FAILED,
            reason=describe_container_exit(code) + (f" ({error})" if error else ""),
            exit_code=code,
            stderr_tail=tail,
            stdout_path=out_path,
            stderr_path=err_path,
        )

    def terminate(self, task: Task) -> None:
        """Send the image's stop signal (SIGTERM by default), as ``docker stop`` does
        first; the minion calls :meth:`kill` after the grace period."""
        self._signal(task, None)

    def kill(self, task: Task) -> None:
        """SIGKILL the container."""
        self._signal(task, "SIGKILL")

    def _signal(self, task: Task, signal_name: Optional[str]) -> None:
        with task.lock:
            handle = task.handle
            if handle is None:
                task.handle = _STOP_BEFORE_START
                return
        if not isinstance(handle, _Running) or self._client is None:
            return
        errors = self.docker.errors
        try:
            self._client.api.kill(handle.container_id, signal=signal_name or handle.stop_signal)
        except errors.NotFound:
            pass  # gone already
        except errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running any more
                raise

    def _remove(self, container_id: str) -> None:
        errors = self.docker.errors
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self._client.api.remove_container(container_id, v=True, force=True)
                return
            except errors.NotFound:
                return
            except (errors.DockerException, OSError) as exc:
                # 409: a removal is already in progress, or the engine is busy: try again.
                if time.monotonic() >= deadline:
                    log.warning("could not remove container %s: %s", container_id[:12], exc)
                    print(
                        f"minionize: could not remove container {container_id[:12]}: {_short(exc)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
                time.sleep(0.2)


# -- output ---------------------------------------------------------------------------
class _Sinks:
    """Where a container's output goes: the minion's streams or per-task files. Keeps
    the last lines of stderr for the Result."""

    def __init__(self, out_path: Optional[str], err_path: Optional[str]) -> None:
        self._files: list[IO[bytes]] = []
        self._out: Optional[IO[bytes]] = None
        self._err: Optional[IO[bytes]] = None
        if out_path and err_path:
            self._out = open(out_path, "wb")  # noqa: SIM115 (closed in __exit__)
            self._files.append(self._out)
            self._err = open(err_path, "wb")  # noqa: SIM115
            self._files.append(self._err)
        self._tail: deque[bytes] = deque()
        self._tail_size = 0

    def __enter__(self) -> _Sinks:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._files:
            handle.close()

    def write(self, out: Optional[bytes], err: Optional[bytes]) -> None:
        if out:
            self._emit(self._out, sys.stdout, out)
        if err:
            self._emit(self._err, sys.stderr, err)
            self._tail.append(err)
            self._tail_size += len(err)
            while self._tail_size - len(self._tail[0]) >= STDERR_TAIL_BYTES:
                self._tail_size -= len(self._tail.popleft())

    @staticmethod
    def _emit(handle: Optional[IO[bytes]], stream: Any, data: bytes) -> None:
        if handle is not None:
            handle.write(data)
            return
        with _OUTPUT_LOCK:
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
            else:
                stream.write(data.decode("utf-8", "replace"))
            stream.flush()

    def tail(self) -> str:
        text = b"".join(self._tail)[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


# -- helpers --------------------------------------------------------------------------
def _stop_asked(task: Task) -> bool:
    return task.stop_reason is not None or task.handle == _STOP_BEFORE_START


def describe_container_exit(code: int) -> str:
    """``exit code 3``, or ``killed by SIGKILL`` for the 128+N codes of a signal."""
    if code > 128:
        import signal

        try:
            return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _environment_dict(environment: Any) -> dict[str, str]:
    """docker-py accepts a mapping or a list of ``NAME=value``: make it a mapping."""
    if not environment:
        return {}
    if isinstance(environment, Mapping):
        return {str(k): str(v) for k, v in environment.items()}
    result: dict[str, str] = {}
    for item in environment:
        name, _, value = str(item).partition("=")
        result[name] = value
    return result


def _labels_dict(labels: Any) -> dict[str, str]:
    if not labels:
        return {}
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}
    return {str(label): "" for label in labels}


def _items(value: Optional[str]) -> Iterable[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def parse_volumes(value: Optional[str]) -> list[str]:
    """``MINION_DOCKER_VOLUMES``: comma-separated ``host:container[:mode]``. A host path
    starting with ``.`` or ``~`` is made absolute; a bare name is a named volume."""
    volumes = []
    for item in _items(value):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ConfigError(
                f"MINION_DOCKER_VOLUMES: {item!r} is not host:container[:mode] "
                "(e.g. /data:/data:ro,./out:/out)"
            )
        host, target = parts[0], parts[1]
        if host.startswith((".", "~")):
            host = os.path.abspath(os.path.expanduser(host))
        if not target.startswith("/"):
            raise ConfigError(
                f"MINION_DOCKER_VOLUMES: in {item!r} the container path {target!r} must be absolute"
            )
        if len(parts) == 3:
            modes = parts[2].split("+")
            if not all(mode in _VOLUME_MODES for mode in modes):
                raise ConfigError(
                    f"MINION_DOCKER_VOLUMES: in {item!r} the mode {parts[2]!r} is not ro or rw"
                )
            volumes.append(f"{host}:{target}:{','.join(modes)}")
        else:
            volumes.append(f"{host}:{target}")
    return volumes


def passthrough_environment(value: Optional[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``MINION_DOCKER_ENV``: comma-separated names whose values the container gets from
    the minion's environment (``NAME=value`` sets one); an unset name is left out, as
    with ``docker run -e NAME``."""
    result: dict[str, str] = {}
    for item in _items(value):
        name, equals, given = item.partition("=")
        name = name.strip()
        if not _ENV_NAME.match(name):
            raise ConfigError(
                f"MINION_DOCKER_ENV: {name!r} is not a variable name "
                "(give names separated by commas, e.g. HOME,API_TOKEN)"
            )
        if equals:
            result[name] = given
        elif name in environ:
            result[name] = environ[name]
    return result


def parse_cpus(value: Optional[str]) -> Optional[int]:
    """``MINION_DOCKER_CPUS`` (e.g. ``1.5``) as docker's nano CPUs."""
    if value is None:
        return None
    try:
        cpus = float(value)
    except ValueError:
        raise ConfigError(
            f"MINION_DOCKER_CPUS={value!r} is not a number: set it to e.g. 2 or 0.5"
        ) from None
    if not cpus > 0 or cpus == float("inf"):
        raise ConfigError(f"MINION_DOCKER_CPUS={value!r} must be a positive number of CPUs")
    return int(cpus * 1e9)


def parse_memory(value: Optional[str]) -> Optional[int]:
    """``MINION_DOCKER_MEMORY`` (``512m``, ``2g``, ``1.5GiB``, bytes) in bytes."""
    if value is None:
        return None
    match = _MEMORY.match(value.strip())
    if not match:
        raise ConfigError(
            f"MINION_DOCKER_MEMORY={value!r} is not a size: set it to e.g. 512m or 2g"
        )
    size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    if size < 6 * 1024**2:
        raise ConfigError(f"MINION_DOCKER_MEMORY={value!r} is too small: docker needs 6m or more")
    return size
