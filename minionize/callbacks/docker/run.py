"""One container's life for the docker callback (:mod:`.docker`): created, attached,
started, its output streamed, waited for and removed whatever happens; and stopped, as
``docker stop`` does in two steps, from the monitor's thread.

``task.handle`` says where the container is: a :class:`_Running` while it runs, None
before it started (a stop that comes first is remembered by the task: it is never
started) and once it is gone.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..base import Outcome, Result, Task
from ..task_io import OutputSinks
from .daemon import short_error

if TYPE_CHECKING:
    from .daemon import DockerDaemon


@dataclass(frozen=True)
class _Running:
    """``task.handle`` while the container exists (it has been started)."""

    container_id: str
    stop_signal: str


def run_container(
    daemon: DockerDaemon, image: str, kwargs: dict[str, Any], task: Task,
    out_path: Optional[str], err_path: Optional[str],
) -> Result:
    """Run a container of ``image`` made with ``kwargs`` for ``task``, its output to the
    log files (or the minion's own), and say how it ended."""
    if task.stop_asked:
        return Result(Outcome.FAILED, reason="stopped before it started")
    client = daemon.connect()
    errors = daemon.errors
    container_id: Optional[str] = None
    try:
        try:
            container = client.containers.create(image, **kwargs)
        except errors.ImageNotFound:
            return Result(
                Outcome.FAILED,
                reason=f"the image {image!r} is not on the Docker engine at {daemon.host()}",
            )
        except errors.APIError as exc:
            reason = f"cannot create the container: {short_error(exc)}"
            return Result(Outcome.FAILED, reason=reason)
        container_id = container.id
        stop_signal = container.attrs.get("Config", {}).get("StopSignal") or "SIGTERM"
        # Attached before the start, so the live stream has every byte; with
        # logs=True the daemon also replays its log buffer, and output written
        # while it does arrives twice (seen as a duplicated line under load).
        stream = daemon.streams.api.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True
        )
        try:
            # Under the task's lock: a stop asked from now on finds the container running.
            running = task.attach(_start, container, container_id, stop_signal)
        except errors.APIError as exc:
            stream.close()
            return Result(
                Outcome.FAILED,
                reason=f"the container could not start: {short_error(exc)}",
                exit_code=127 if "not found" in str(exc) else 126,
            )
        if running is None:
            stream.close()
            return Result(Outcome.FAILED, reason="stopped before it started")
        try:
            with OutputSinks(out_path, err_path) as sinks:
                for out, err in stream:
                    sinks.write(out, err)
                tail = sinks.tail()
        finally:
            stream.close()
        status = daemon.streams.api.wait(container_id)
    finally:
        task.detach()
        if container_id is not None:
            daemon.remove(container_id)
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


def signal_container(daemon: DockerDaemon, task: Task, signal_name: Optional[str]) -> None:
    """Send ``signal_name`` (None: the image's stop signal) to the task's container; a
    container not started yet never will be."""
    handle = task.stop_target()
    if isinstance(handle, _Running):
        daemon.signal(handle.container_id, signal_name or handle.stop_signal)


def _start(container: Any, container_id: str, stop_signal: str) -> _Running:
    container.start()
    return _Running(container_id, stop_signal)


def describe_container_exit(code: int) -> str:
    """``exit code 3``, or ``killed by SIGKILL`` for the 128+N codes of a signal."""
    if code > 128:
        try:
            return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit code {code}"
