"""What the allocator needs of a scheduler, whichever it is: submit an array, list its
jobs, cancel the pending ones.

A :class:`Scheduler` (SLURM: :mod:`.slurm`, Grid Engine: :mod:`.sge`) answers
:meth:`~Scheduler.jobs` with one command (squeue, qstat), and finds the allocator's jobs
by their name, so that an allocator started again finds what the last one submitted.
Each command runs with a timeout; a command that fails raises :class:`SchedulerError`
with the scheduler's own message, marked ``transient`` when it says the controller is
busy or unreachable (the allocator then backs off instead of counting a failure).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

#: A job's condition, whatever the scheduler calls it.
PENDING, RUNNING, ENDED = "pending", "running", "ended"
#: Ends that are the cluster's doing, not the job's: the job is replaced, never counted.
INTERRUPTED = "interrupted"
#: How long a scheduler command may take.
COMMAND_TIMEOUT = 60.0

_TRANSIENT = re.compile(
    r"unable to contact|timed? ?out|socket|try again|temporarily|connection refused|"
    r"not responding|busy|unreachable|can't contact|cannot contact|commlib", re.IGNORECASE)


class SchedulerError(RuntimeError):
    """A scheduler command failed; ``transient``: the scheduler said it is busy."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Job:
    """One job (an array task) of the allocator: its ``label`` as the minion's report
    names it (``1234_5``, ``1234.5`` on Grid Engine), its condition (:data:`PENDING`,
    :data:`RUNNING`, :data:`ENDED`), the scheduler's own words for it (state, reason,
    exit code), when it was submitted, started and ended (epoch seconds, None: not
    known), where its output went (None: not known), and what it was submitted as."""

    label: str
    condition: str
    said: str = ""
    interrupted: bool = False
    failed: bool = False
    submitted: Optional[float] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    output: Optional[str] = None
    #: The :attr:`Submission.tag` it was submitted with (None: not known).
    tag: Optional[str] = None


@dataclass(frozen=True)
class Submission:
    """One array to submit: ``count`` minions of ``script`` with ``args``, named
    ``name``, their output in ``output_dir``, with the scheduler's own ``options``,
    the ``env`` the jobs inherit and the ``tag`` of what they run."""

    script: str
    args: tuple[str, ...]
    count: int
    name: str
    output_dir: str
    options: tuple[str, ...] = ()
    env: Optional[Mapping[str, str]] = None
    #: What the jobs run (a hash of the script, its arguments and options): a job that
    #: ended broken counts only against the submission that has its tag.
    tag: str = ""


class Scheduler(Protocol):
    """A scheduler the allocator drives."""

    #: The scheduler's name, and that of its query command (for log lines).
    name: str
    query_command: str

    def submit(self, submission: Submission) -> str:
        """Submit the array; its job id (raises :class:`SchedulerError`)."""

    def submit_command(self, submission: Submission) -> list[str]:
        """The command :meth:`submit` runs (``--dry-run`` prints it)."""

    def jobs(self, name: str) -> list[Job]:
        """The jobs named ``name``, with one query (raises :class:`SchedulerError`)."""

    def cancel_pending(self, name: str) -> None:
        """Cancel the pending jobs named ``name``."""


def run(argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
        timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a scheduler command; its standard output, or :class:`SchedulerError` with
    its message (a timeout and a busy controller are transient)."""
    try:
        result = subprocess.run(list(argv), env=None if env is None else dict(env),
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{argv[0]} did not answer within {timeout:.0f} s",
                             transient=True) from None
    except FileNotFoundError:
        raise SchedulerError(f"{argv[0]} not found: is this a login node of the cluster?") from None
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or
                   f"exit status {result.returncode}")
        raise SchedulerError(f"{argv[0]}: {message}", bool(_TRANSIENT.search(message)))
    return result.stdout


def tail(path: Optional[str], lines: int = 10) -> str:
    """The last ``lines`` of the file at ``path``, or a note saying why there are none."""
    if not path:
        return "(no output file known)"
    try:
        with open(path, errors="replace") as handle:
            text = handle.read()[-8000:]
    except OSError as error:
        return f"(cannot read {path}: {error.strerror})"
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path} is empty)"


def exit_text(status: str) -> str:
    """squeue's ``exit_code`` (a wait status) in words: ``, exit code 3``, ``, signal 9``."""
    try:
        value = int(status)
    except ValueError:
        return ""
    if value & 0x7F:
        return f", signal {value & 0x7F}"
    return f", exit code {value >> 8}" if value else ""


def user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
