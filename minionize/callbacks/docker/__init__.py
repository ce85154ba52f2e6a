"""Tasks as containers: the callback, its options, the connection to the Docker daemon
and one container's run."""

from .callback import DockerCallback

__all__ = ["DockerCallback"]
