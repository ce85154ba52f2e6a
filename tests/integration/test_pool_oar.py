"""minionize.pool.Pool and Executor on the oar backend, on the real single-node OAR 2.5
of the tests (the bodies: :mod:`tests.integration.pool_on_cluster`).

The pool runs oarsub, oarstat and oardel from PATH: here wrappers that enter the
cluster's namespace. OAR gives a job none of the submitting environment: the pool
writes it into its private run directory, for the job script to read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration import pool_on_cluster as bodies
from tests.integration.pool_on_cluster import *  # noqa: F403 - its tests, collected here
from tests.services.oar import CLIENTS, OarCluster, oar  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("oar")


class Oar(bodies.Scheduler):
    backend, query, cancel = "oar", "oarstat", "oardel"

    def __init__(self, cluster: OarCluster, bindir: Path) -> None:
        super().__init__(bindir)
        self.cluster = cluster
        self.wrap(cluster.namespace.prefix(), {name: f"/usr/bin/{name}" for name in CLIENTS})

    def delete(self, worker: str) -> None:
        self.cluster.run(["oardel", worker[1:]])

    def live(self, workers: Sequence[str]) -> list[str]:
        listed = self.cluster.jobs()
        return [name for name in workers if name[1:] in listed]

    def leftovers(self) -> None:
        self.cluster.delete_all()


@pytest.fixture
def cluster(oar: OarCluster, tmp_path: Path,  # noqa: F811 - the fixture
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Oar]:
    scheduler = Oar(oar, tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{scheduler.bindir}:{oar.env['PATH']}")
    yield scheduler
    scheduler.leftovers()


def test_oarsubs_own_error_is_shown(cluster: Oar, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    bodies.refused_submission_is_shown(cluster, tmp_path / "w", ["-l", "host=3"],
                                       "not enough resources")


def test_the_environment_is_in_a_private_file_only(cluster: Oar, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    holding = bodies.secret_reaches_the_function(cluster, tmp_path / "w", monkeypatch)
    assert [p.name for p in holding] == ["env.sh"]
    assert holding[0].stat().st_mode & 0o777 == 0o600
    script = holding[0].parent / "workers.oar"
    assert script.exists() and b"s3cr3t" not in script.read_bytes()
