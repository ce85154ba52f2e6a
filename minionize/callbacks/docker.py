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

The ``MINION_DOCKER_*`` options are parsed in :mod:`.docker_options`; the connection to
the Docker engine is :mod:`._docker_engine`; output and log files are handled as for a
process, by :mod:`._task_io`.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from ._docker_engine import DockerEngine, short_error
from ._task_io import OutputSinks, log_paths, make_log_dir, param_json
from .base import Callback, Outcome, Result, Task
from .command import CommandBuilder, ParamError
from .docker_options import PULL_POLICIES, container_kwargs, options_from_env, run_line

if TYPE_CHECKING:
    from ..config import Settings

@dataclass(frozen=True)
class _Running:
    """``task.handle`` while the container exists (it has been started)."""

    container_id: str
    stop_signal: str


#: ``task.handle`` when a stop was asked before the container started: never start it.
_STOP_BEFORE_START = "stop-before-start"
#: ``task.handle`` once the container is gone.
_GONE = "gone"


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
        self.engine = DockerEngine(
            os.environ if docker_env is None else docker_env,
            pool_size=max(10, 2 * concurrency + 2),
        )
        #: The docker package.
        self.docker = self.engine.docker
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
        options = options_from_env(env)
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
        return container_kwargs(
            self.options,
            self.to_kwargs(delivery.param),
            environment={
                "MINION_PARAM": param_json(delivery.param),
                "MINION_PARAM_ID": str(delivery.id),
                "MINION_ATTEMPT": str(delivery.attempt),
            },
            labels={
                "minionize.minion": self._minion,
                "minionize.param-id": str(delivery.id)[:1000],
                "minionize.attempt": str(delivery.attempt),
            },
        )

    def describe(self, param: Any) -> str:
        try:
            kwargs = {**self.options, **self.to_kwargs(param)}
        except ParamError as exc:
            return f"# {exc}"  # names the param, abbreviated
        return run_line(self.image, kwargs)

    # -- lifecycle ---------------------------------------------------------------------
    def docker_host(self) -> str:
        """The Docker engine this callback talks to, as ``DOCKER_HOST`` says."""
        return self.engine.host()

    def setup(self) -> None:
        """Reach the Docker engine and make sure the image is there."""
        self.engine.connect()
        make_log_dir(self.log_dir)
        self.engine.ensure_image(self.image, self.pull)

    def teardown(self) -> None:
        self.engine.close()

    # -- running -----------------------------------------------------------------------
    def run(self, task: Task) -> Result:
        delivery = task.delivery
        try:
            kwargs = self.create_kwargs(task)
        except ParamError as exc:
            return Result(Outcome.REJECTED, reason=str(exc))
        if _stop_asked(task):
            return Result(Outcome.FAILED, reason="stopped before it started")
        client = self.engine.connect()
        errors = self.engine.errors
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
                reason = f"cannot create the container: {short_error(exc)}"
                return Result(Outcome.FAILED, reason=reason)
            container_id = container.id
            stop_signal = container.attrs.get("Config", {}).get("StopSignal") or "SIGTERM"
            with task.lock:
                # Under the lock: a stop asked from now on finds the container running.
                if _stop_asked(task):
                    return Result(Outcome.FAILED, reason="stopped before it started")
                # Attached before the start, so the live stream has every byte; with
                # logs=True the engine also replays its log buffer, and output written
                # while it does arrives twice (seen as a duplicated line under load).
                stream = self.engine.streams.api.attach(
                    container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
                )
                try:
                    container.start()
                except errors.APIError as exc:
                    stream.close()
                    return Result(
                        Outcome.FAILED,
                        reason=f"the container could not start: {short_error(exc)}",
                        exit_code=127 if "not found" in str(exc) else 126,
                    )
                task.handle = _Running(container_id, stop_signal)
            try:
                with OutputSinks(out_path, err_path) as sinks:
                    for out, err in stream:
                        sinks.write(out, err)
                    tail = sinks.tail()
            finally:
                stream.close()
            status = self.engine.streams.api.wait(container_id)
        finally:
            with task.lock:
                task.handle = _GONE
            if container_id is not None:
                self.engine.remove(container_id)
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
        if isinstance(handle, _Running):
            self.engine.signal(handle.container_id, signal_name or handle.stop_signal)


def _stop_asked(task: Task) -> bool:
    return task.stop_reason is not None or task.handle == _STOP_BEFORE_START


def describe_container_exit(code: int) -> str:
    """``exit code 3``, or ``killed by SIGKILL`` for the 128+N codes of a signal."""
    if code > 128:
        try:
            return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"
