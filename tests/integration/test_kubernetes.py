"""The Kubernetes examples (examples/kubernetes/) on a real single-node cluster.

The cluster is tests/services/kubernetes.py (built once from source, started once per
session); the image is the project's Dockerfile built by tests/integration/test_image.py
and imported into the node's containerd. The manifests are applied as shipped, but for
what a user fills in: the image, the program (``args``), the Redis address, and counts
(pods, CPUs, concurrency, the idle timeout). Pods use ``hostNetwork: true`` (the node has
no pod network) and reach a real redis-server of the tests on 127.0.0.1.

Each task records ``start PARAM ATTEMPT POD-UID`` and, once done, ``done ...`` in the
Redis list ``runs``: what ran where, and how often.

Run alone: ``python -m pytest -s tests/integration/test_kubernetes.py`` (``-s`` shows
the cluster's start time).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, queue_status
from tests.integration.test_image import TAG, image  # noqa: F401 - the image fixture
from tests.services import free_port, script, wait_for
from tests.services.docker import DockerEngine, dockerd  # noqa: F401 - the engine fixture
from tests.services.kubernetes import NODE, Kubernetes

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.service("kubernetes")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
LABEL = "app.kubernetes.io/name=minions"
#: The task each param is given to (``args``): records its start, sleeps the seconds
#: after the param's ``:`` (``p007:1.5``), fails for a param starting with ``fail``; it
#: finishes only while the key ``open`` exists (see :func:`frozen`).
TASK = """
import os, re, sys, time, redis
param = sys.argv[1]
pod = re.search(r"pod([0-9a-f-]{36})", open("/proc/self/cgroup").read()).group(1)
runs = redis.Redis.from_url(os.environ["MINION_REDIS_URL"])
row = f"{param} {os.environ['MINION_ATTEMPT']} {pod}"
runs.rpush("runs", "start " + row)
if param.startswith("fail"):
    sys.exit(1)
time.sleep(float(param.partition(":")[2] or 0))
while not runs.exists("open"):  # the test's gate, closed while it stops pods
    runs.sadd("waiting", param)
    time.sleep(0.05)
runs.srem("waiting", param)
runs.rpush("runs", "done " + row)
os._exit(0)  # at once: a SIGTERM after the record and before the exit would rerun it
"""


@pytest.fixture(scope="session")
def node_image(kubernetes: Kubernetes, image: str, dockerd: DockerEngine) -> str:  # noqa: F811
    """The minionize image, imported into the node (``docker save | ctr images import``)."""
    with tempfile.TemporaryDirectory(prefix="mzk8simage-") as work:
        archive = Path(work) / "image.tar"
        with open(archive, "wb") as out:
            for chunk in dockerd.client.images.get(image).save(named=True):
                out.write(chunk)
        kubernetes.import_image(archive)
    return image


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(kubernetes: Kubernetes, node_image: str, redis: RedisServer) -> Iterator[Kubernetes]:
    """The cluster, with no Job, Deployment or pod of the examples left after the test
    (removed while their Redis still runs: without it a minion takes 30 s to stop)."""
    yield kubernetes
    kubernetes.kubectl("delete", "job,deployment", "-l", LABEL, "--ignore-not-found",
                       "--cascade=foreground", "--grace-period=5", "--timeout=120s",
                       timeout=150, check=False)
    kubernetes.kubectl("delete", "pod", "-l", LABEL, "--ignore-not-found", "--force",
                       "--grace-period=0", timeout=60, check=False)
    wait_for(lambda: not pods(kubernetes), 60, "the examples' pods to be gone", every=0.5)


# -- the manifests, as a user fills them in ------------------------------------------------


def manifest(name: str, redis: RedisServer, pods: int, **env: str) -> dict[str, Any]:
    """``examples/kubernetes/NAME`` with the image, the program, the Redis address and
    the counts filled in: ``pods`` (parallelism or replicas), 1 CPU in 3 per pod (three
    fit on a 2-CPU node), ``env`` (MINION_* values) replaced."""
    [doc] = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    doc["spec"]["parallelism" if doc["kind"] == "Job" else "replicas"] = pods
    spec = doc["spec"]["template"]["spec"]
    spec["hostNetwork"] = True  # the test node has no pod network
    [container] = [c for c in spec["containers"] if c["name"] == "minion"]
    container["image"] = TAG
    container["args"] = ["python3", "-c", TASK]
    values = {"MINION_REDIS_URL": redis.url, "MINION_CONCURRENCY": "2", **env}
    for item in container["env"]:
        if item["name"] in values:
            item["value"] = values.pop(item["name"])
    assert not values, f"not in {name}: {sorted(values)}"
    container["resources"] = {"requests": {"cpu": "600m", "memory": "256Mi"},
                              "limits": {"cpu": "600m", "memory": "256Mi"}}
    return doc


def apply(cluster: Kubernetes, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def fill(redis: RedisServer, params: list[str]) -> None:
    """``minion-queue fill PARAMS`` on the stream of the manifests (the tasks' gate open)."""
    with client(redis) as redis_client:
        redis_client.set("open", 1)
    result = subprocess.run([script("minion-queue"), "fill", *params], env=queue_env(redis),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def queue_env(redis: RedisServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINION_")}
    env.update(MINION_ENGINE="redis", MINION_REDIS_URL=redis.url, MINION_REDIS_STREAM="params",
               MINION_REDIS_GROUP="minions")
    return env


@contextmanager
def client(redis: RedisServer) -> Iterator[Any]:
    connection = redis.redis.Redis(host="127.0.0.1", port=redis.port)
    try:
        yield connection
    finally:
        connection.close()


def runs(redis: RedisServer) -> list[tuple[str, str, int, str]]:
    """(start or done, param, attempt, pod uid) of every task, in order."""
    with client(redis) as redis_client:
        rows = [row.decode().split() for row in redis_client.lrange("runs", 0, -1)]
    return [(kind, param, int(attempt), pod) for kind, param, attempt, pod in rows]


def done(redis: RedisServer) -> list[str]:
    return sorted(param for kind, param, _, _ in runs(redis) if kind == "done")


def running(redis: RedisServer) -> dict[str, str]:
    """The params whose task started and has not finished: param -> pod uid."""
    now: dict[str, str] = {}
    for kind, param, _, pod in runs(redis):
        if kind == "start":
            now[param] = pod
        else:
            now.pop(param, None)
    return now


@contextmanager
def frozen(redis: RedisServer, cluster: Kubernetes) -> Iterator[None]:
    """The tasks' gate closed: once every running task waits at it, none is about to
    finish, so that pods stopped in the body stop only unfinished tasks. (A task that
    ends just as its minion stops is released and run again: see the report of
    ``minionize``'s stop, ``exit 0; minion stopping``.) Opened again at the end."""
    with client(redis) as redis_client:
        redis_client.delete("open")

        def all_waiting() -> bool:
            now = set(running(redis))
            return bool(now) and now <= {m.decode() for m in redis_client.smembers("waiting")}

        wait(all_waiting, 60, "the running tasks to wait at the gate", cluster)
        try:
            yield
        finally:
            redis_client.set("open", 1)


# -- the cluster's state -------------------------------------------------------------------


def pods(cluster: Kubernetes) -> list[dict[str, Any]]:
    listed = cluster.kubectl("get", "pods", "-l", LABEL, "-o", "json", timeout=30)
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def exit_codes(cluster: Kubernetes) -> dict[str, int]:
    """Pod name -> the exit code of its minion, for the pods whose minion has ended."""
    codes = {}
    for pod in pods(cluster):
        for status in pod["status"].get("containerStatuses", []):
            terminated = status.get("state", {}).get("terminated")
            if terminated:
                codes[pod["metadata"]["name"]] = terminated["exitCode"]
    return codes


def diagnose(cluster: Kubernetes) -> str:
    """The pods, their minions' last log lines and the Jobs: for failure messages."""
    out = [cluster.kubectl("get", "pods,jobs,deployments", "-o", "wide", check=False).stdout]
    for pod in pods(cluster):
        name = pod["metadata"]["name"]
        log = cluster.kubectl("logs", name, "--tail=15", check=False)
        out.append(f"--- {name}\n{log.stdout}{log.stderr}")
    return "\n".join(out)


def job_condition(cluster: Kubernetes, name: str) -> dict[str, Any] | None:
    """The Job's Complete or Failed condition once it is true."""
    job = json.loads(cluster.kubectl("get", "job", name, "-o", "json", timeout=30).stdout)
    for condition in job["status"].get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            found: dict[str, Any] = condition
            return found
    return None


def wait_job(cluster: Kubernetes, name: str, timeout: float) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def ended() -> bool:
        condition = job_condition(cluster, name)
        if condition:
            found.append(condition)
        return bool(condition)

    try:
        wait_for(ended, timeout, f"job {name} to end", every=0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(cluster)}") from None
    return found[0]


def wait(condition: Any, timeout: float, what: str, cluster: Kubernetes) -> None:
    try:
        wait_for(condition, timeout, what, every=0.2)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(cluster)}") from None


def params(count: int, seconds: float = 0) -> list[str]:
    return [f"p{i:03d}" + (f":{seconds:g}" if seconds else "") for i in range(count)]


# -- the tests -----------------------------------------------------------------------------


def test_a_job_of_three_pods_drains_200_params_each_run_once(cluster: Kubernetes,
                                                             redis: RedisServer) -> None:
    todo = params(200)
    fill(redis, todo)
    started = time.monotonic()
    apply(cluster, manifest("job-redis.yaml", redis, 3, MINION_IDLE_TIMEOUT="5"))
    condition = wait_job(cluster, "minions-redis", 300)
    assert condition["type"] == "Complete", diagnose(cluster)
    print(f"\n200 params on 3 pods: the Job complete in {time.monotonic() - started:.1f} s")

    assert done(redis) == todo
    starts = [(param, attempt) for kind, param, attempt, _ in runs(redis) if kind == "start"]
    assert sorted(starts) == [(param, 1) for param in todo]  # each started once, attempt 1
    assert len({pod for _, _, _, pod in runs(redis)}) == 3, "the three pods shared the work"
    assert set(exit_codes(cluster).values()) == {0}, diagnose(cluster)
    status = queue_status(queue_env(redis))
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (200, 0, 0, 0)


def test_a_pod_deleted_mid_task_gives_its_params_back_and_the_job_completes(
        cluster: Kubernetes, redis: RedisServer) -> None:
    todo = params(24, seconds=2)
    fill(redis, todo)
    apply(cluster, manifest("job-redis.yaml", redis, 3, MINION_IDLE_TIMEOUT="5"))
    wait(lambda: len(set(running(redis).values())) == 3, 120, "tasks running in 3 pods", cluster)
    with frozen(redis, cluster):
        victim_uid = next(iter(running(redis).values()))
        [victim] = [p for p in pods(cluster) if p["metadata"]["uid"] == victim_uid]
        name = victim["metadata"]["name"]
        interrupted = sorted(p for p, uid in running(redis).items() if uid == victim_uid)
        # Its log, followed to the end: the minion's last words once the container exited.
        follow = subprocess.Popen([str(cluster.bin / "kubectl"), "logs", "-f", name],
                                  env=cluster.env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        try:
            cluster.kubectl("delete", "pod", name, "--wait=false")
            last_words = follow.communicate(timeout=60)[0]
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
        # A graceful stop within terminationGracePeriodSeconds, not a SIGKILL, with the
        # code the Job replaces (MINION_STOPPED_EXIT), not 0, which would say "drained".
        assert "minion stops (exit 75)" in last_words, last_words
        assert last_words.count("released attempt 1") == len(interrupted), last_words
        wait(lambda: victim_uid not in {p["metadata"]["uid"] for p in pods(cluster)}, 60,
             "the deleted pod to be gone", cluster)

    # Its params are back at once (not when a lease expires) and run by the other pods.
    def started_again() -> bool:
        rows = runs(redis)
        return all(any(kind == "start" and p == param and pod != victim_uid
                       for kind, p, _, pod in rows) for param in interrupted)

    wait(started_again, 60, "the deleted pod's params to start again elsewhere", cluster)
    condition = wait_job(cluster, "minions-redis", 300)
    assert condition["type"] == "Complete", diagnose(cluster)

    assert done(redis) == todo  # each param done once
    for param in interrupted:
        # Started twice, both as attempt 1: the deletion did not count as a failure.
        starts = [(attempt, pod) for kind, p, attempt, pod in runs(redis)
                  if kind == "start" and p == param]
        assert [attempt for attempt, _ in starts] == [1, 1], (param, starts)
        assert starts[0][1] == victim_uid and starts[1][1] != victim_uid
    status = queue_status(queue_env(redis))
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (24, 0, 0, 0)


def test_a_param_that_always_fails_is_dead_lettered_and_the_job_completes(
        cluster: Kubernetes, redis: RedisServer) -> None:
    todo = params(10)
    fill(redis, [*todo, "fail-always"])
    apply(cluster, manifest("job-redis.yaml", redis, 2, MINION_IDLE_TIMEOUT="5"))
    condition = wait_job(cluster, "minions-redis", 300)
    assert condition["type"] == "Complete", diagnose(cluster)

    assert done(redis) == todo
    attempts = [attempt for kind, param, attempt, _ in runs(redis) if param == "fail-always"]
    assert attempts == [1, 2, 3]  # MINION_MAX_ATTEMPTS of the manifest
    status = queue_status(queue_env(redis))
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (10, 0, 0, 1)
    # The pod that dead-lettered it exited 1: ignored by the podFailurePolicy, not a failure.
    assert 1 in exit_codes(cluster).values(), diagnose(cluster)
    job = json.loads(cluster.kubectl("get", "job", "minions-redis", "-o", "json").stdout)
    assert job["status"].get("failed", 0) == 0, job["status"]


def test_a_bad_setting_fails_the_job_at_once(cluster: Kubernetes, redis: RedisServer) -> None:
    fill(redis, params(5))
    started = time.monotonic()
    apply(cluster, manifest("job-redis.yaml", redis, 2, MINION_CONCURRENCY="many"))
    condition = wait_job(cluster, "minions-redis", 120)
    assert (condition["type"], condition["reason"]) == ("Failed", "PodFailurePolicy"), condition
    print(f"\na bad MINION_CONCURRENCY: the Job failed in {time.monotonic() - started:.1f} s")
    assert 2 in exit_codes(cluster).values(), diagnose(cluster)
    job = json.loads(cluster.kubectl("get", "job", "minions-redis", "-o", "json").stdout)
    assert job["status"].get("succeeded", 0) == 0 and runs(redis) == [], job["status"]
    logs = cluster.kubectl("logs", "-l", LABEL, "--tail=20").stdout
    assert "MINION_CONCURRENCY" in logs, logs


def test_a_deployment_scaled_1_3_0_2_mid_run_loses_nothing_and_runs_nothing_twice(
        cluster: Kubernetes, redis: RedisServer) -> None:
    todo = params(60, seconds=1)
    fill(redis, todo)
    apply(cluster, manifest("deployment.yaml", redis, 1))

    def scale(replicas: int) -> None:
        cluster.kubectl("scale", "deployment/minions", f"--replicas={replicas}")

    wait(lambda: len(done(redis)) >= 4, 120, "4 params done by 1 pod", cluster)
    scale(3)
    wait(lambda: len(set(running(redis).values())) == 3, 120, "tasks running in 3 pods", cluster)
    with frozen(redis, cluster):
        scale(0)
        wait(lambda: not pods(cluster), 120, "the pods to stop", cluster)
        interrupted = sorted(running(redis))
        assert len(interrupted) == 6, interrupted  # 3 pods, 2 tasks each
        status = queue_status(queue_env(redis))
        assert status["in_flight"] == 0 and status["todo"] == 60 - len(done(redis)), status
    scale(2)
    wait(lambda: queue_status(queue_env(redis))["done"] == 60, 240, "the 60 params done", cluster)

    assert done(redis) == todo  # nothing lost, nothing run twice
    for param in interrupted:
        attempts = [attempt for kind, p, attempt, _ in runs(redis) if kind == "start" and p == param]
        assert attempts == [1, 1], (param, attempts)  # given back uncounted
    assert running(redis) == {}
    status = queue_status(queue_env(redis))
    assert (status["done"], status["todo"], status["in_flight"], status["dead"]) == (60, 0, 0, 0)


def test_a_node_drained_mid_run_stops_every_pod_and_the_job_still_drains_the_queue(
        cluster: Kubernetes, redis: RedisServer) -> None:
    # kubectl drain evicts every pod of the node: each minion gives its params back and
    # exits MINION_STOPPED_EXIT (75), which the Job's podFailurePolicy ignores, so the Job
    # replaces the pods once the node takes pods again. With exit 0 the Job was Complete
    # here, the queue not drained.
    todo = params(20, seconds=2)
    fill(redis, todo)
    apply(cluster, manifest("job-redis.yaml", redis, 2, MINION_IDLE_TIMEOUT="5"))
    wait(lambda: len(set(running(redis).values())) == 2, 120, "tasks running in 2 pods", cluster)
    first = {p["metadata"]["uid"] for p in pods(cluster)}
    with frozen(redis, cluster):
        cluster.kubectl("drain", NODE, f"--pod-selector={LABEL}", "--ignore-daemonsets",
                        "--timeout=120s", timeout=150)
    assert not first & {p["metadata"]["uid"] for p in pods(cluster)
                        if p["status"].get("phase") in ("Pending", "Running")}
    assert set(exit_codes(cluster).values()) <= {75}, diagnose(cluster)
    cluster.kubectl("uncordon", NODE)
    condition = wait_job(cluster, "minions-redis", 300)
    status = queue_status(queue_env(redis))
    assert (condition["type"], status["todo"], status["dead"]) == ("Complete", 0, 0), status
    assert done(redis) == todo  # each once: what the drain stopped was given back


def test_minion_status_reads_a_kubernetes_run_from_the_reports_volume(
        cluster: Kubernetes, redis: RedisServer, tmp_path: Path) -> None:
    # The way examples/kubernetes/README.md shows: a volume every pod mounts (here the
    # node's own directory; on a cluster of many nodes a ReadWriteMany volume), JSON
    # reports in it, minion-status on it from wherever it is mounted.
    reports = tmp_path / "reports"
    reports.mkdir()
    os.chown(reports, 1000, 1000)  # the image's user
    todo = params(30)
    fill(redis, todo)
    doc = manifest("job-redis.yaml", redis, 2, MINION_IDLE_TIMEOUT="5", MINION_REPORTER="json")
    spec = doc["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "reports", "hostPath": {"path": str(reports)}}]
    [container] = spec["containers"]
    container["volumeMounts"] = [{"name": "reports", "mountPath": "/reports"}]
    container["env"].append({"name": "REPORTER_JSON_DIRECTORY", "value": "/reports"})
    apply(cluster, doc)
    assert wait_job(cluster, "minions-redis", 300)["type"] == "Complete", diagnose(cluster)
    shown = subprocess.run([script("minion-status"), "--json", str(reports)], capture_output=True,
                           text=True, timeout=60, env=queue_env(redis))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    minions = status["minions"]
    assert len(minions) == 2 and {m["state"] for m in minions} == {"finished"}, minions
    assert sum(m["done"] for m in minions) == 30, minions
    assert status["queue"]["done"] == 30 and status["queue"]["todo"] == 0, status["queue"]
