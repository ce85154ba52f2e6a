"""minionize.pool.Pool and Executor on the sge backend, on the real single-node Grid
Engine of the tests (the bodies: :mod:`tests.integration.pool_on_cluster`).

The pool runs qsub, qstat, qacct and qdel from PATH: here wrappers that enter the
cluster's namespace; the cell's variables (``SGE_ROOT``...) are set for the test, and
the jobs get them, with the rest of the caller's environment, from ``qsub -V``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration import pool_on_cluster as bodies
from tests.integration.pool_on_cluster import *  # noqa: F403 - its tests, collected here
from tests.services import wait_for
from tests.services.sge import BINARIES, SgeCluster, sge  # noqa: F401 - the fixture

pytestmark = pytest.mark.service("sge")


class Sge(bodies.Scheduler):
    backend, query, cancel = "sge", "qstat", "qdel"

    def __init__(self, cluster: SgeCluster, bindir: Path) -> None:
        super().__init__(bindir)
        self.cluster = cluster
        self.wrap(cluster.namespace(),
                  {name: str(BINARIES / name) for name in ("qsub", "qstat", "qdel", "qacct")})

    def delete(self, worker: str) -> None:
        job, task = worker[1:].split("_")
        self.cluster.run(["qdel", job, "-t", task])

    def live(self, workers: Sequence[str]) -> list[str]:
        listed = self.cluster.jobs()
        return [name for name in workers if name[1:].replace("_", ".") in listed]

    def leftovers(self) -> None:
        left = sorted({job.split(".")[0] for job in self.cluster.jobs()})
        if left:
            self.cluster.command(["qdel", "-f", *left])
        wait_for(lambda: not self.cluster.jobs(), 60, "every job to leave", every=0.5)


@pytest.fixture
def cluster(sge: SgeCluster, tmp_path: Path,  # noqa: F811 - the fixture
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Sge]:
    scheduler = Sge(sge, tmp_path / "bin")
    for key, value in sge.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{scheduler.bindir}:{sge.env['PATH']}")
    yield scheduler
    scheduler.leftovers()


def test_qsubs_own_error_is_shown(cluster: Sge, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    bodies.refused_submission_is_shown(cluster, tmp_path / "w", ["-q", "nosuch"], "nosuch")


def test_no_variable_is_written_to_a_file(cluster: Sge, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert bodies.secret_reaches_the_function(cluster, tmp_path / "w", monkeypatch) == []
