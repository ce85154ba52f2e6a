"""OAR for the allocator: ``oarsub --array`` to submit, one ``oarstat -J`` a poll to list.

``oarstat -J -f --sql`` lists the jobs of a name, waiting, running and ended (OAR keeps
them in its database: the query takes those submitted within :data:`FORGET_AFTER`), with
their state, exit status, events and output files, in one query.

OAR gives a job none of the submitting environment: each array runs a small script the
allocator writes beside the jobs' output (``NAME-TAG-HASH.oar``): the ``#OAR`` lines of
the user's script (but its ``-n``, ``-O`` and ``-E``: the allocator's own), the
variables the minions need, then ``exec`` of the user's script. Its name carries the
:attr:`~.scheduler.Submission.tag`, so that a job's command says what it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any, Optional

from .scheduler import (
    ENDED,
    PENDING,
    RUNNING,
    Job,
    SchedulerError,
    Submission,
    exit_text,
    run,
    user,
)

_RUNNING = {"Running", "Finishing", "Suspended", "Resuming"}
_ENDED = {"Terminated", "Error", "toError"}
#: Events of a job the cluster ended (oardel, the walltime, a besteffort kill, a
#: checkpoint): it is replaced, never counted as broken.
_BY_CLUSTER = {"FRAG_JOB_REQUEST", "WALLTIME", "BESTEFFORT_KILL", "CHECKPOINT",
               "CHECKPOINT_SUCCESSFULL", "RESUBMIT_JOB_AUTOMATICALLY", "EXTERMINATE_JOB",
               "PREEMPTED", "NODE_FAILURE"}
#: Seconds an ended job is still listed (as slurmctld's MinJobAge, longer).
FORGET_AFTER = 3600.0
#: The options the allocator sets on oarsub's command line.
_OWN_OPTIONS = {"-n", "--name", "-O", "--stdout", "-E", "--stderr"}
_SCRIPT = re.compile(r"-(?P<tag>[0-9a-f]*)-[0-9a-f]{8}\.oar$")


class Oar:
    """OAR's commands, run with ``env`` (None: this process's environment);
    ``output_dir``: where the jobs' output and scripts go."""

    name = "OAR"
    query_command = "oarstat"

    def __init__(self, output_dir: str, env: Optional[Mapping[str, str]] = None) -> None:
        self.output_dir = output_dir
        self.env = env
        self.waiting: list[str] = []

    def job_script(self, submission: Submission) -> tuple[str, str]:
        """The script an array runs (its path, its text): the user's ``#OAR`` lines, the
        jobs' variables, then the user's script."""
        try:
            with open(submission.script, errors="replace") as script:
                directives = [line.rstrip("\n") for line in script if directive(line)]
        except OSError as error:
            raise SchedulerError(f"cannot read {submission.script}: {error.strerror}") from None
        lines = ["#!/bin/sh", *directives]
        lines += [f"export {key}={shlex.quote(value)}"
                  for key, value in sorted((submission.env or {}).items())]
        lines.append(f'exec {shlex.quote(submission.script)} "$@"')
        text = "\n".join(lines) + "\n"
        digest = hashlib.sha1(text.encode(errors="replace")).hexdigest()[:8]
        path = os.path.join(submission.output_dir,
                            f"{submission.name}-{submission.tag}-{digest}.oar")
        return path, text

    def submit_command(self, submission: Submission) -> list[str]:
        script, _ = self.job_script(submission)
        output = os.path.join(submission.output_dir, submission.name + ".%jobid%")
        command = " ".join(shlex.quote(word) for word in (script, *submission.args))
        return ["oarsub", "--array", str(submission.count), "-n", submission.name,
                "-O", output + ".out", "-E", output + ".err", *submission.options,
                "-S", command]

    def submit(self, submission: Submission) -> str:
        path, text = self.job_script(submission)
        os.makedirs(submission.output_dir, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as script:
            script.write(text)
        os.chmod(temporary, 0o755)
        os.replace(temporary, path)
        # oarsub takes the jobs' directory from PWD, which a cron line may not set.
        env = {**(self.env or os.environ), "PWD": os.getcwd()}
        out = run(self.submit_command(submission), env)
        found = re.search(r"(?m)^OAR_ARRAY_ID=(\d+)", out) or \
            re.search(r"(?m)^OAR_JOB_ID=(\d+)", out)
        if found is None:
            raise SchedulerError(f"oarsub printed no job id: {out.strip()[:500]}")
        return found.group(1)

    def jobs(self, name: str) -> list[Job]:
        since = int(time.time() - FORGET_AFTER)
        query = (f"job_name = {sql_text(name)} AND job_user = {sql_text(user())} AND "
                 f"(stop_time = 0 OR stop_time > {since})")
        out = run(["oarstat", "-J", "-f", "--sql", query], self.env)
        try:
            listed = json.loads(out) if out.strip() else {}
        except ValueError as error:
            raise SchedulerError(f"oarstat: unreadable JSON ({error})", transient=True) from None
        if not isinstance(listed, dict):
            raise SchedulerError("oarstat: unreadable JSON (not an object)", transient=True)
        jobs = [self.parse(entry) for entry in listed.values() if isinstance(entry, dict)]
        self.waiting = [job.label for job in jobs if job.condition == PENDING]
        return jobs

    def parse(self, entry: Mapping[str, Any]) -> Job:
        """One job of oarstat's JSON (``-f``) as a :class:`Job`."""
        state = str(entry.get("state") or "")
        events = {str(e.get("type")) for e in entry.get("events") or [] if isinstance(e, dict)}
        if state in _ENDED:
            condition = ENDED
        elif state in _RUNNING:
            condition = RUNNING
        else:
            condition = PENDING
        interrupted = bool(events & _BY_CLUSTER)
        code = entry.get("exit_code")
        said = state
        if condition == ENDED:
            said += exit_text(str(code)) if code is not None else ""
            shown = sorted(events - {"SWITCH_INTO_TERMINATE_STATE"})
            said += f" (events: {', '.join(shown)})" if shown else ""
            message = str(entry.get("message") or "").strip()
            said += f"; {message}" if message and state != "Terminated" else ""
        failed = condition == ENDED and not interrupted and (
            state != "Terminated" or code not in (0, None))
        command = str(entry.get("command") or "")
        found = _SCRIPT.search(command.split(" ")[0]) if command else None
        output = entry.get("stderr_file")
        directory = entry.get("launchingDirectory")
        if isinstance(output, str) and isinstance(directory, str):
            output = os.path.join(directory, output)
        return Job(
            label=str(entry.get("Job_Id")), condition=condition, said=said,
            interrupted=interrupted, failed=failed,
            submitted=seconds(entry.get("submissionTime")),
            started=seconds(entry.get("startTime")) if condition != PENDING else None,
            ended=seconds(entry.get("stopTime")) if condition == ENDED else None,
            output=output if isinstance(output, str) else None,
            tag=found.group("tag") if found else None)

    def cancel_pending(self, name: str) -> None:
        """oardel the jobs the last query saw waiting."""
        if self.waiting:
            run(["oardel", *self.waiting], self.env)


def directive(line: str) -> bool:
    """Whether ``line`` is an ``#OAR`` line the jobs keep: not the name and output ones,
    which the allocator gives on the command line (OAR would say it ignores them)."""
    if not line.startswith("#OAR"):
        return False
    words = line[4:].split()
    return not words or words[0].split("=")[0] not in _OWN_OPTIONS


def sql_text(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def seconds(value: Any) -> Optional[float]:
    """oarstat's epoch seconds; None for none (0)."""
    return float(value) if isinstance(value, (int, float)) and value > 0 else None

