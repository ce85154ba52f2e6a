"""The docker callback's options: ``MINION_DOCKER_*`` parsed, and a container's arguments.

:func:`options_from_env` turns the variables into keyword arguments of docker-py's
``containers.create`` (errors name the variable and say what to write);
:func:`container_kwargs` lays a param's own arguments over them and adds what the minion
always sets; :func:`run_line` says it all as the ``docker run`` a user would type
(``DRY=1``). Nothing here needs the ``docker`` package or a Docker daemon.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from ...errors import ConfigError
from ..command.builder import shell_line

if TYPE_CHECKING:
    from ...config import Env

PULL_POLICIES = ("missing", "never", "always")

#: Keys of ``containers.run`` that make no sense here: the callback always creates a
#: detached container, streams its output and removes it itself.
_RUN_ONLY_KEYS = ("detach", "remove", "auto_remove", "stdout", "stderr", "stream")

_VOLUME_MODES = frozenset({"ro", "rw", "z", "Z"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def options_from_env(env: Env) -> dict[str, Any]:
    """``containers.create`` arguments from ``MINION_DOCKER_VOLUMES``, ``_ENV``,
    ``_NETWORK``, ``_CPUS``, ``_MEMORY``, ``_USER`` and ``_INIT`` (only those set, but
    ``init``, which defaults to true)."""
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
    return options


def container_kwargs(
    options: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    environment: Mapping[str, str],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """``overrides`` laid over ``options``, less the keys the callback owns; the
    environments of both merged and ``environment`` added, ``labels`` added, detached."""
    kwargs = {**options, **overrides}
    for key in _RUN_ONLY_KEYS:
        kwargs.pop(key, None)
    kwargs["environment"] = {
        **environment_dict(options.get("environment")),
        **environment_dict(kwargs.get("environment")),
        **environment,
    }
    kwargs["labels"] = {**labels_dict(kwargs.get("labels")), **labels}
    kwargs["detach"] = True
    return kwargs


def run_line(image: str, kwargs: Mapping[str, Any]) -> str:
    """The ``docker run`` command line that does what ``kwargs`` say."""
    words = ["docker", "run", "--rm"]
    if kwargs.get("init"):
        words.append("--init")
    for volume in kwargs.get("volumes") or ():
        words += ["-v", str(volume)]
    for name in environment_dict(kwargs.get("environment")):
        words += ["-e", name]
    for key, flag in (("network_mode", "--network"), ("user", "--user"),
                      ("mem_limit", "--memory")):
        if kwargs.get(key):
            words += [flag, str(kwargs[key])]
    if kwargs.get("nano_cpus"):
        words += ["--cpus", f"{kwargs['nano_cpus'] / 1e9:g}"]
    words.append(image)
    command = kwargs.get("command")
    if isinstance(command, str):
        return shell_line(words) + " " + command
    return shell_line([*words, *(command or ())])


def environment_dict(environment: Any) -> dict[str, str]:
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


def labels_dict(labels: Any) -> dict[str, str]:
    """docker-py accepts a mapping or a list of names: make it a mapping."""
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
