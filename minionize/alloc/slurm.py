"""SLURM for the allocator: ``sbatch --array`` to submit, one ``squeue`` a poll to list.

``squeue --states=all`` lists the pending, running and recently ended jobs (slurmctld
keeps an ended job for ``MinJobAge``, 300 s by default) with their state, reason, exit
code and output file, so that one query says who waits, who runs and how each ended,
without ``sacct`` (which needs the accounting database and trips RPC limits).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Optional

from .scheduler import ENDED, PENDING, RUNNING, Job, Submission, exit_text, run

#: squeue's fields, in the order :meth:`Slurm.parse` reads them.
FIELDS = ("JobArrayID", "State", "Reason", "exit_code", "StdErr", "SubmitTime", "StartTime",
          "EndTime", "Comment")
#: The comment the jobs carry: what they run (:attr:`Submission.tag`).
COMMENT = "minion-alloc "
SEPARATOR = "\x1f"
_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_ENDED_BY_CLUSTER = {"CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                     "REVOKED"}
_ENDED_FAILED = {"FAILED", "OUT_OF_MEMORY", "SPECIAL_EXIT"}
_ENDED = _ENDED_BY_CLUSTER | _ENDED_FAILED | {"COMPLETED"}
#: Pending reasons that never clear by themselves: the job will never start.
NEVER_STARTS = {"PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidAccount",
                "InvalidQOS", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
                "PartitionDown", "PartitionInactive", "JobHeldAdmin", "DependencyNeverSatisfied"}


class Slurm:
    """SLURM's commands, run with ``env`` (None: this process's environment)."""

    name = "SLURM"
    query_command = "squeue"

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        self.env = env

    def submit_command(self, submission: Submission) -> list[str]:
        output = os.path.join(submission.output_dir, "%x-%A_%a.out")
        return ["sbatch", "--parsable", f"--array=0-{submission.count - 1}",
                f"--job-name={submission.name}", f"--output={output}",
                f"--comment={COMMENT}{submission.tag}",
                *submission.options, submission.script, *submission.args]

    def submit(self, submission: Submission) -> str:
        env = {**(self.env or os.environ), **(submission.env or {})}
        return run(self.submit_command(submission), env).strip().split(";")[0]

    def jobs(self, name: str) -> list[Job]:
        form = ",".join(f"{field}:{SEPARATOR}" for field in FIELDS)
        out = run(["squeue", "--noheader", "--array", "--states=all", "--me",
                   f"--name={name}", f"--Format={form}"], self.env)
        return [job for line in out.splitlines() if (job := self.parse(line, name))]

    @staticmethod
    def parse(line: str, name: str) -> Optional[Job]:
        """One line of :meth:`jobs`' squeue as a :class:`Job` (None: not one)."""
        parts = [part.strip() for part in line.split(SEPARATOR)]
        if len(parts) < len(FIELDS):
            return None
        label, state, reason, status, stderr, submitted, started, ended, comment = parts[
            :len(FIELDS)]
        state = state.split()[0] if state else ""
        said = f"{state}" + (f" ({reason})" if reason and reason != "None" else "")
        if state in _ENDED:
            said += exit_text(status)
            condition = ENDED
        elif state in _RUNNING:
            condition = RUNNING
        else:
            condition = PENDING
        output = stderr.replace("%x", name).replace("%A", label.split("_")[0])
        output = output.replace("%a", label.split("_")[1] if "_" in label else "")
        return Job(
            label=label, condition=condition, said=said,
            interrupted=state in _ENDED_BY_CLUSTER,
            failed=state in _ENDED_FAILED or (condition == PENDING and reason in NEVER_STARTS),
            submitted=epoch(submitted),
            started=epoch(started) if condition != PENDING else None,
            ended=epoch(ended) if condition == ENDED else None,
            output=output or None,
            tag=comment[len(COMMENT):] if comment.startswith(COMMENT) else None,
        )

    def cancel_pending(self, name: str) -> None:
        run(["scancel", "--me", "--state=PENDING", f"--name={name}"], self.env)


def epoch(text: str) -> Optional[float]:
    """squeue's local time (``2026-12-04T03:07:45``) in epoch seconds; None: none."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
