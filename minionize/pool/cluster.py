"""What the cluster backends share: the workers are the tasks of array jobs.

One array task (an OAR sub-job) is one worker minion, never one job per item. A backend
(SLURM: :mod:`.slurm`, OAR: :mod:`.oar`, Grid Engine: :mod:`.sge`) says how to submit
an array, how to list its tasks in one query, how to ask for the final state of the
tasks that left the queue, and how to cancel them; :class:`ClusterBackend` does the
rest, the same way for all three:

* its job script is written once into the run directory (mode 0700, beside the jobs'
  output), and each :meth:`~ClusterBackend.start` submits one array of it;
* :meth:`~ClusterBackend.poll` queries the scheduler at most once every
  :data:`QUERY_SECONDS`, whatever the number of items or workers: a task that leaves the
  queue without its worker saying it finished is lost (its chunk comes back, the pool
  submits a replacement), with the scheduler's words for why;
* :meth:`~ClusterBackend.stop` is one cancel command for every job still there, then a
  wait (at most :data:`CANCEL_WAIT_SECONDS`) for them to leave the queue.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Optional

from ..alloc.scheduler import ENDED, PENDING, RUNNING
from .backends import Backend, PoolWorker, read_state, wait_until
from .errors import PoolError
from .rundir import write_private

__all__ = ["ENDED", "PENDING", "RUNNING", "ClusterBackend", "Listing", "run_command"]

#: The scheduler is asked at most this often (each query is a request to its controller).
QUERY_SECONDS = 1.0
#: How long terminate waits for the array tasks to leave the queue after the cancel.
CANCEL_WAIT_SECONDS = 15.0
COMMAND_TIMEOUT = 30.0

#: ``{worker name: (condition, the scheduler's words)}``: the tasks one query listed, each
#: :data:`PENDING`, :data:`RUNNING` or :data:`ENDED`; a worker not listed has ended.
Listing = dict[str, tuple[str, str]]


def run_command(argv: Sequence[str], backend: str,
                env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command (never raises for its exit code); PoolError when it is
    missing or does not answer in time."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=None if env is None else dict(env))
    except FileNotFoundError:
        raise PoolError(f"{argv[0]} not found: the {backend} backend needs its scheduler's "
                        "commands on PATH") from None
    except subprocess.TimeoutExpired:
        raise PoolError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT:g}s") from None


def said(done: subprocess.CompletedProcess[str]) -> str:
    """What a command that failed said."""
    return done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"


class ClusterBackend(Backend):
    """Workers as the tasks of array jobs, one array per :meth:`start`; a subclass says
    how its scheduler submits, lists, reports and cancels."""

    poll_seconds = 0.2
    query_seconds = QUERY_SECONDS
    #: The backend's name (``Pool(backend=...)``), also its subdirectory of the run
    #: directory; the submit and cancel commands' names; the job script's file name.
    backend = ""
    submit_name = ""
    cancel_name = ""
    script_name = "workers.sh"
    #: The job script: ``{python}``, ``{rundir}`` and ``{directory}`` (this backend's
    #: subdirectory) are filled in, shell-quoted.
    script_text = ""
    #: The words for a task's end when the scheduler says nothing of it.
    unknown = "state unknown: no accounting"

    def __init__(self, rundir: str, submit_args: Sequence[str] = ()) -> None:
        super().__init__(rundir)
        self.submit_args = list(submit_args)
        #: The jobs submitted (one per start: the array's id), in order.
        self.jobs: list[str] = []
        #: Why each lost worker was lost, in the scheduler's words.
        self.reasons: dict[str, str] = {}
        #: How many times the scheduler was queried (at most one per query_seconds).
        self.queries = 0
        self.directory = os.path.join(rundir, self.backend)
        self.script = os.path.join(self.directory, self.script_name)
        self.job_of: dict[str, str] = {}
        self.ended: set[str] = set()
        self.stopping = False
        self._polled = 0.0

    # -- what a scheduler says ---------------------------------------------------------
    def submit_command(self, count: int) -> list[str]:
        """The command that submits an array of ``count`` workers."""
        raise NotImplementedError

    def submitted(self, out: str, count: int) -> tuple[str, list[str]]:
        """The job id and the workers' names, from the submit command's output."""
        raise NotImplementedError

    def listing(self) -> Optional[Listing]:
        """The pool's tasks in the queue, with one query (None: the query failed)."""
        raise NotImplementedError

    def final(self, workers: list[PoolWorker]) -> dict[str, str]:
        """The final states of tasks that left the queue, by worker name ({}: unknown)."""
        return {}

    def cancel_command(self, jobs: list[str]) -> list[str]:
        raise NotImplementedError

    def describe(self, name: str) -> str:
        """A worker's task in the scheduler's words (``array task 12_0``)."""
        raise NotImplementedError

    def submit_env(self) -> Optional[dict[str, str]]:
        """The submit command's environment (None: this process's)."""
        return None

    # -- the rest, the same for every scheduler ----------------------------------------
    def run(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None
            ) -> subprocess.CompletedProcess[str]:
        return run_command(argv, self.backend, env)

    def prepare(self) -> None:
        """Write the job script (once), private to this user."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        text = self.script_text.format(python=shlex.quote(sys.executable),
                                       rundir=shlex.quote(self.rundir),
                                       directory=shlex.quote(self.directory))
        write_private(self.script, text.encode())
        os.chmod(self.script, 0o700)

    def start(self, count: int) -> None:
        if not os.path.exists(self.script):
            self.prepare()
        done = self.run(self.submit_command(count), self.submit_env())
        if done.returncode != 0:
            raise PoolError(f"{self.submit_name} refused the pool's workers: {said(done)}")
        job, names = self.submitted(done.stdout, count)
        self.jobs.append(job)
        for name in names:
            self.job_of[name] = job
            self.workers.append(PoolWorker(name))
        self._polled = 0.0

    def query(self) -> Optional[Listing]:
        self.queries += 1
        listed = self.listing()
        if listed is not None:
            self.ended.update(n for n in self.job_of if listed.get(n, (ENDED, ""))[0] == ENDED)
        return listed

    def poll(self) -> list[PoolWorker]:
        watched = [w for w in self.workers if w.state in ("starting", "alive")]
        if not watched or time.monotonic() - self._polled < self.query_seconds:
            return self.workers
        self._polled = time.monotonic()
        listed = self.query()
        if listed is None:
            return self.workers  # the query failed: look again later
        gone: list[tuple[PoolWorker, str]] = []
        for worker in watched:
            info = read_state(self.rundir, worker.name)
            if info:
                worker.pid = int(str(info["pid"]))
                worker.host = str(info["host"])
            if info.get("state") == "finished":
                worker.state = "finished"
                continue
            condition, words = listed.get(worker.name, (ENDED, ""))
            if condition == ENDED:
                gone.append((worker, words))
            elif condition == RUNNING and info:
                worker.state = "alive"
        if gone:
            self._lose(gone)
        return self.workers

    def _lose(self, gone: list[tuple[PoolWorker, str]]) -> None:
        final = self.final([worker for worker, _ in gone])
        for worker, words in gone:
            state = read_state(self.rundir, worker.name).get("state")
            if state == "finished":
                worker.state = "finished"
                continue
            worker.state = "lost"
            words = final.get(worker.name) or words or self.unknown
            if state == "stopped":
                words = f"stopped by a signal: {self.cancel_name} or preemption; {words}"
            self.reasons[worker.name] = f"{self.describe(worker.name)} left the queue ({words})"

    def reason(self, worker: PoolWorker) -> str:
        return self.reasons.get(worker.name, "lost")

    def live_jobs(self) -> list[str]:
        """The jobs with a task not seen to end."""
        return [job for job in self.jobs
                if any(j == job and n not in self.ended for n, j in self.job_of.items())]

    def stop(self) -> None:
        """One cancel for every job of the pool still there; wait for them to leave."""
        self.stopping = True
        jobs = self.live_jobs()
        if jobs:
            self.run(self.cancel_command(jobs))
            wait_until(self._all_ended, CANCEL_WAIT_SECONDS, self.poll_seconds)
        for worker in self.workers:
            if worker.state in ("starting", "alive"):
                worker.state = "finished" if read_state(self.rundir, worker.name).get(
                    "state") == "finished" else "lost"

    def _all_ended(self) -> bool:
        listed = self.query()
        return listed is not None and all(c == ENDED for c, _ in listed.values())
