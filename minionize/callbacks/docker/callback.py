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
SIGKILLed minion can leave one behind, labelled ``minionize.minion.run``.

Stopping works like ``docker stop`` split in two: :meth:`DockerCallback.terminate` sends
the image's stop signal (SIGTERM by default) and the minion's monitor calls
:meth:`DockerCallback.kill` after ``MINION_GRACE_PERIOD``. Containers run with an init
process (``docker run --init``) by default, so that a program that does not handle
SIGTERM itself dies on it as it would outside a container (PID 1 ignores it).

The ``MINION_DOCKER_*`` options are parsed in :mod:`.options`; the connection to the
Docker daemon is :class:`.daemon.DockerDaemon`; a container's life (created, streamed,
waited for, removed; stopped) is :mod:`.run`; output and log files are handled as for a
process, by :mod:`minionize.callbacks.task_io`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from ...errors import ConfigError
from ..base import Callback, Outcome, Result, Task
from ..command.builder import CommandBuilder, ParamError
from ..task_io import log_paths, make_log_dir, param_json
from .daemon import DockerDaemon
from .options import PULL_POLICIES, container_kwargs, options_from_env, run_line
from .run import describe_container_exit as describe_container_exit
from .run import run_container, signal_container

if TYPE_CHECKING:
    from ...config import Settings


class DockerCallback(Callback):
    """Run a container of ``image`` per param.

    ``command`` and ``template`` place the param as for a process (see
    :mod:`minionize.callbacks.command.builder`). ``options`` are extra keyword arguments of
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
        self.daemon = DockerDaemon(
            os.environ if docker_env is None else docker_env,
            pool_size=max(10, 2 * concurrency + 2),
        )
        #: The docker package.
        self.docker = self.daemon.docker
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
        when it cannot: see :mod:`minionize.callbacks.command.builder`)."""
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
        """The Docker daemon this callback talks to, as ``DOCKER_HOST`` says."""
        return self.daemon.host()

    def setup(self) -> None:
        """Reach the Docker daemon and make sure the image is there."""
        self.daemon.connect()
        make_log_dir(self.log_dir)
        self.daemon.ensure_image(self.image, self.pull)

    def teardown(self) -> None:
        self.daemon.close()

    # -- running -----------------------------------------------------------------------
    def run(self, task: Task) -> Result:
        delivery = task.delivery
        try:
            kwargs = self.create_kwargs(task)
        except ParamError as exc:
            return Result(Outcome.REJECTED, reason=str(exc))
        out_path = err_path = None
        if self.log_dir:
            out_path, err_path = log_paths(self.log_dir, str(delivery.id), delivery.attempt)
        return run_container(self.daemon, self.image, kwargs, task, out_path, err_path)

    def terminate(self, task: Task) -> None:
        """Send the image's stop signal (SIGTERM by default), as ``docker stop`` does
        first; the minion calls :meth:`kill` after the grace period."""
        signal_container(self.daemon, task, None)

    def kill(self, task: Task) -> None:
        """SIGKILL the container."""
        signal_container(self.daemon, task, "SIGKILL")
