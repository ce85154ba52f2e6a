"""The docker callback without a Docker engine: settings, container arguments, errors."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from minionize.callbacks.base import Task
from minionize.callbacks.docker.options import (
    parse_cpus,
    parse_memory,
    parse_volumes,
    passthrough_environment,
)
from minionize.config import Settings
from minionize.engines.base import Delivery
from minionize.errors import ConfigError, MissingExtraError

pytest.importorskip("docker")

from minionize.callbacks.docker.callback import DockerCallback, describe_container_exit  # noqa: E402


def callback(command: Any = ("echo",), **env: str) -> DockerCallback:
    settings = Settings.from_env({"MINION_CALLBACK": "docker", **env})
    return DockerCallback.from_settings(settings, "img:1", list(command))


def kwargs_for(cb: DockerCallback, param: Any, attempt: int = 1) -> dict[str, Any]:
    return cb.create_kwargs(Task(Delivery(param, "id-1", attempt)))


def test_param_goes_into_the_command_as_for_a_process() -> None:
    assert kwargs_for(callback(["echo", "hi"]), "a b")["command"] == ["echo", "hi", "a b"]
    assert kwargs_for(callback(["echo"]), [1, "x"])["command"] == ["echo", "1", "x"]
    assert kwargs_for(callback(["cp", "{}", "/out/{}"]), "f")["command"] == ["cp", "f", "/out/f"]
    templated = callback([], MINION_TEMPLATE="run --x {x} {y}")
    assert kwargs_for(templated, {"x": 1, "y": "$(rm -rf ~)"})["command"] == [
        "run", "--x", "1", "$(rm -rf ~)"]
    # No command: the param is the container's command (arguments of the ENTRYPOINT).
    assert kwargs_for(callback([]), "--flag")["command"] == ["--flag"]


def test_shell_runs_sh_in_the_container_with_values_out_of_band() -> None:
    cb = callback(["echo", "{}", "|", "wc"], MINION_SHELL="1")
    assert kwargs_for(cb, "a;b")["command"] == [
        "/bin/sh", "-c", 'echo "${1}" | wc', "sh", "a;b"]


def test_environment_labels_and_defaults() -> None:
    cb = callback(MINION_DOCKER_ENV="TOKEN,FIXED=1", TOKEN="t")
    kwargs = kwargs_for(cb, ["k", 2], attempt=2)
    assert kwargs["environment"] == {
        "TOKEN": "t", "FIXED": "1", "MINION_PARAM": '["k", 2]',
        "MINION_PARAM_ID": "id-1", "MINION_ATTEMPT": "2",
    }
    assert kwargs["labels"]["minionize.param-id"] == "id-1"
    assert kwargs["detach"] is True and kwargs["init"] is True
    assert "remove" not in kwargs and "auto_remove" not in kwargs


def test_mapping_param_without_template_is_rejected() -> None:
    from minionize.callbacks.command.builder import ParamError
    from minionize.errors import CommandLineError

    cb = callback(["echo"])
    with pytest.raises(CommandLineError, match="--template"):  # the command line is wrong
        kwargs_for(cb, {"x": 1})
    kwargs_for(cb, "fine")
    with pytest.raises(ParamError, match="--template"):  # this param is odd
        kwargs_for(cb, {"x": 1})


def test_options_from_the_environment() -> None:
    cb = callback(
        MINION_DOCKER_VOLUMES="/data:/data:ro, cache:/cache",
        MINION_DOCKER_NETWORK="none", MINION_DOCKER_CPUS="1.5", MINION_DOCKER_MEMORY="512m",
        MINION_DOCKER_USER="1000:1000", MINION_DOCKER_INIT="0",
    )
    kwargs = kwargs_for(cb, "p")
    assert kwargs["volumes"] == ["/data:/data:ro", "cache:/cache"]
    assert kwargs["network_mode"] == "none"
    assert kwargs["nano_cpus"] == 1_500_000_000
    assert kwargs["mem_limit"] == 512 * 1024**2
    assert kwargs["user"] == "1000:1000"
    assert kwargs["init"] is False
    assert cb.describe("p") == (
        "docker run --rm -v /data:/data:ro -v cache:/cache --network none --user 1000:1000 "
        "--memory 536870912 --cpus 1.5 img:1 echo p"
    )


def test_to_kwargs_override_keeps_the_original_api() -> None:
    class Mine(DockerCallback):
        def to_kwargs(self, param: Any) -> dict[str, Any]:
            return {"command": f"run {param}", "environment": ["A=1"], "remove": True,
                    "user": "nobody"}

    cb = Mine("img", user="root", volumes=["/a:/a"])
    kwargs = kwargs_for(cb, 7)
    assert kwargs["command"] == "run 7" and kwargs["user"] == "nobody"
    assert kwargs["volumes"] == ["/a:/a"]
    assert kwargs["environment"]["A"] == "1" and kwargs["environment"]["MINION_PARAM"] == "7"
    assert "remove" not in kwargs


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MINION_DOCKER_VOLUMES", "/only-one-part", "host:container"),
        ("MINION_DOCKER_VOLUMES", "/a:relative", "must be absolute"),
        ("MINION_DOCKER_VOLUMES", "/a:/a:rx", "not ro or rw"),
        ("MINION_DOCKER_ENV", "NOT-A-NAME", "not a variable name"),
        ("MINION_DOCKER_CPUS", "lots", "not a number"),
        ("MINION_DOCKER_CPUS", "0", "positive"),
        ("MINION_DOCKER_MEMORY", "huge", "not a size"),
        ("MINION_DOCKER_MEMORY", "1k", "too small"),
        ("MINION_DOCKER_PULL", "sometimes", "not one of"),
        ("MINION_DOCKER_INIT", "maybe", "yes/no"),
        ("MINION_TEMPLATE", "a {", "MINION_TEMPLATE"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        callback(**{variable: value})
    assert variable in str(info.value)


def test_command_and_template_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not both"):
        callback(["echo"], MINION_TEMPLATE="echo {}")


def test_image_from_the_environment_or_a_clear_error() -> None:
    settings = Settings.from_env({"MINION_DOCKER_IMAGE": "from-env:2"})
    assert DockerCallback.from_settings(settings, None, []).image == "from-env:2"
    with pytest.raises(ConfigError, match="MINION_DOCKER_IMAGE"):
        DockerCallback.from_settings(Settings.from_env({}), None, [])


def test_missing_docker_package_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)
    with pytest.raises(MissingExtraError, match=r"minionize\[docker\]"):
        DockerCallback("img")


def test_parsers() -> None:
    assert parse_volumes("./out:/out")[0].endswith("/out:/out")
    assert parse_volumes("/a:/b:ro+z") == ["/a:/b:ro,z"]
    assert parse_volumes(None) == []
    assert passthrough_environment("A, B ,C=", {"A": "1"}) == {"A": "1", "C": ""}
    assert parse_cpus("0.25") == 250_000_000
    assert parse_memory("2g") == 2 * 1024**3
    assert parse_memory("1.5GiB") == int(1.5 * 1024**3)
    assert parse_memory("10485760") == 10485760
    assert describe_container_exit(137) == "exit code 137 (killed by SIGKILL)"
    assert describe_container_exit(2) == "exit code 2"


def test_terminate_and_kill_before_run_are_harmless() -> None:
    cb = DockerCallback("img")
    task = Task(Delivery("p", "id"))
    cb.terminate(task)
    cb.kill(task)
    result = cb.run(task)  # never reaches the engine
    assert not result.ok and "before it started" in result.reason
