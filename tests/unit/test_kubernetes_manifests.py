"""The Kubernetes examples parse and keep the relations that make them work.

* every pod runs the same image, through its ENTRYPOINT (minionize): no ``command:``;
* ``terminationGracePeriodSeconds`` >= ``MINION_GRACE_PERIOD`` + GRACE_MARGIN: on SIGTERM
  the minion needs the grace period to stop its tasks, then a little more to requeue
  them, remove containers and flush its report, before Kubernetes SIGKILLs it;
* a Job drains the queue: ``completions`` unset, ``MINION_IDLE_TIMEOUT`` set, several
  pods; a Deployment never idles out;
* ``MINION_CONCURRENCY`` is a number no larger than the pod's CPUs;
* every ``MINION_*`` variable is one that minionize reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "kubernetes"
#: Seconds beyond MINION_GRACE_PERIOD: the loop waits 2 s for killed tasks, then
#: releases params, removes containers and writes its report.
GRACE_MARGIN = 5
MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        assert set(item) <= {"name", "value", "valueFrom"}, item
        if "value" in item:
            assert isinstance(item["value"], str), f"{item['name']}: quote the value"
            env[item["name"]] = item["value"]
    return env


def minion_container(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod_spec(doc)["containers"] if c["name"] == "minion"]
    return container


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def known_variables() -> set[str]:
    names: set[str] = set()
    sources = [*(ROOT / "minionize").rglob("*.py"), ROOT / ".env.example"]
    for source in sources:
        if source.exists():
            names.update(re.findall(r"\bMINION_[A-Z0-9_]+", source.read_text()))
    return names


def test_the_examples_exist() -> None:
    names = {path.name for path in MANIFESTS}
    assert {"job-redis.yaml", "deployment.yaml"} <= names
    assert (EXAMPLES / "README.md").exists()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_run_minionize_with_a_consistent_environment(path: Path) -> None:
    known = known_variables()
    for doc in load(path):
        spec = pod_spec(doc)
        container = minion_container(doc)
        assert "command" not in container, "command: would bypass the minionize ENTRYPOINT"
        assert container["args"], "args: is the program each param is given to"
        env = env_of(container)
        assert env.get("MINION_ENGINE") in {"redis", "pubsub", "google", "pulsar"}
        unknown = {name for name in env if name.startswith("MINION_")} - known
        assert not unknown, f"variables minionize does not read: {unknown}"

        grace = float(env.get("MINION_GRACE_PERIOD", "10"))
        termination = spec.get("terminationGracePeriodSeconds", 30)
        assert termination >= grace + GRACE_MARGIN, (
            f"{path.name}: terminationGracePeriodSeconds={termination} leaves no margin "
            f"after MINION_GRACE_PERIOD={grace:g} (needs >= {grace + GRACE_MARGIN:g})"
        )

        concurrency = env.get("MINION_CONCURRENCY", "1")
        assert concurrency.isdigit(), "auto counts the node's CPUs on cgroup v1 nodes"
        limit = container["resources"]["limits"]["cpu"]
        assert int(concurrency) <= cpus(str(limit))

        if env.get("MINION_ENGINE") == "redis":
            assert {"MINION_REDIS_URL", "MINION_REDIS_STREAM", "MINION_REDIS_GROUP"} <= set(env)
        if env.get("MINION_ENGINE") in {"pubsub", "google"}:
            assert {"GOOGLE_PROJECT_ID", "GOOGLE_TOPIC_ID", "GOOGLE_SUBSCRIPTION"} <= set(env)
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            credentials = env.get("GOOGLE_APPLICATION_CREDENTIALS")
            if credentials:
                assert any(credentials.startswith(m + "/") for m in mounts)


def test_one_image_everywhere() -> None:
    images = {minion_container(doc)["image"] for path in MANIFESTS for doc in load(path)}
    assert len(images) == 1, images
    readme = (EXAMPLES / "README.md").read_text()
    assert images.pop() in readme


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name.startswith("job-")],
                         ids=lambda p: p.name)
def test_jobs_end_when_the_queue_is_drained(path: Path) -> None:
    [job] = load(path)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert "completions" not in job["spec"], "completions must be unset (work-queue Job)"
    assert job["spec"]["parallelism"] >= 2
    env = env_of(minion_container(job))
    assert float(env["MINION_IDLE_TIMEOUT"]) > 0, "without it a pod never ends"
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"  # required by podFailurePolicy
    rules = job["spec"]["podFailurePolicy"]["rules"]
    actions = {tuple(r["onExitCodes"]["values"]): r["action"] for r in rules if "onExitCodes" in r}
    assert actions[(2,)] == "FailJob", "a configuration error must not be retried"
    assert actions[(1,)] == "Ignore", "dead letters are not a pod failure"
    # A pod stopped mid-run must not look done (exit 0): its code is one the Job replaces.
    stopped = int(env["MINION_STOPPED_EXIT"])
    assert stopped not in (0, 1, 2, 3) and actions[(stopped,)] == "Ignore"


def test_the_deployment_never_idles_out() -> None:
    [deployment] = load(EXAMPLES / "deployment.yaml")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] >= 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    env = env_of(minion_container(deployment))
    assert not env.get("MINION_IDLE_TIMEOUT"), "an endless minion must not exit when idle"
    assert pod_spec(deployment).get("restartPolicy", "Always") == "Always"


def final_stage() -> dict[str, str]:
    """The last value of each instruction in the Dockerfile's final stage."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")
                    and not line.startswith((" ", "\t"))]
    last_from = max(n for n, i in enumerate(instructions) if i[0] == "FROM")
    return {i[0]: i[1].strip() for i in instructions[last_from:] if len(i) == 2}


def test_the_image_runs_minionize_as_a_non_root_user() -> None:
    after = final_stage()
    assert after["ENTRYPOINT"] == '["minionize"]'
    user = after["USER"].split(":")[0]
    assert user not in {"root", "0"}
    # Kubernetes can check runAsNonRoot only against a numeric user: with a name the
    # kubelet refuses to start the container ("image has non-numeric user").
    assert user.isdigit(), f"USER {after['USER']}: use the numeric uid:gid"
    # What Kubernetes and `docker stop` send, and what minionize stops gracefully on.
    assert after["STOPSIGNAL"] == "SIGTERM"
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert "*" not in ignore or {"!minionize", "!pyproject.toml", "!README.md"} <= set(ignore)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_run_as_the_image_user(path: Path) -> None:
    uid = int(final_stage()["USER"].split(":")[0])
    for doc in load(path):
        container = minion_container(doc)
        context = {**pod_spec(doc).get("securityContext", {}),
                   **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, "say runAsNonRoot: the image's user is not root"
        assert context.get("runAsUser", uid) == uid, "runAsUser must be the image's user"
        assert context.get("allowPrivilegeEscalation") is False
