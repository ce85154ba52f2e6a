"""When this minion's allocation ends: read once, at start, from where it is written.

* ``MINION_WALLTIME`` (``--walltime``): a duration from the minion's start, given by the
  user; ``none`` ignores the scheduler's end too.
* SLURM: ``SLURM_JOB_END_TIME`` where the job has it (SLURM 23.02 and later), else one
  ``squeue -h -j JOB -o %L``: the time left, so that no clock or time zone is read from
  the controller (JOB is ``ARRAY_TASK``, e.g. ``12_3``, in an array, whose first task
  has the array's own job id).
* OAR: ``OAR_JOB_WALLTIME_SECONDS`` from the job's start, which is when OAR wrote the
  job's node file (``OAR_NODEFILE``); the minion's start when that file is not there.
* Grid Engine: ``h_rt`` from ``qstat -j $JOB_ID`` (the job's environment does not have
  it), from the job's start, which is when the execution daemon wrote the job's spool
  directory (``SGE_JOB_SPOOL_DIR/config``).

:func:`allocation_end` gives an :class:`AllocationEnd` (a wall-clock time and where it
came from) or None: no end known, the minion takes params as it always did. A scheduler
command that fails or answers what cannot be read is logged and gives None.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Mapping
from typing import Callable, NamedTuple, Optional

log = logging.getLogger("minionize.minion")

#: Longest wait for the scheduler's one answer at start.
QUERY_SECONDS = 10.0

#: Runs a scheduler command, returns its standard output; raises OSError or
#: subprocess.SubprocessError when it cannot.
Runner = Callable[[list[str]], str]


class AllocationEnd(NamedTuple):
    """The wall-clock time (``time.time()``) the allocation ends, and where it was read."""

    at: float
    source: str


def run_command(argv: list[str]) -> str:
    """The standard output of ``argv``; raises when it fails or takes too long."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_SECONDS, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def allocation_end(
    env: Mapping[str, str],
    walltime: Optional[float],
    started: float,
    run: Runner = run_command,
) -> Optional[AllocationEnd]:
    """When the allocation ends: ``walltime`` seconds after ``started`` (a wall-clock
    time) when the user gave it (``inf``: never), else what the scheduler of ``env``
    says; None when nothing says."""
    if walltime is not None:
        if math.isinf(walltime):
            return None
        return AllocationEnd(started + walltime, "MINION_WALLTIME")
    try:
        if env.get("SLURM_JOB_ID"):
            return slurm_end(env, run)
        if env.get("OAR_JOB_WALLTIME_SECONDS"):
            return oar_end(env, started)
        if env.get("JOB_ID") and "SGE_TASK_ID" in env:
            return sge_end(env, run)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("walltime: the job's end is unknown (%s): taking params as if it had none",
                    describe(exc))
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        said = (exc.stderr or exc.stdout or "").strip().splitlines()
        return f"{' '.join(exc.cmd)} exited {exc.returncode}" + (f": {said[-1]}" if said else "")
    return str(exc)


# -- SLURM -----------------------------------------------------------------------------
def slurm_end(env: Mapping[str, str], run: Runner) -> Optional[AllocationEnd]:
    job = env["SLURM_JOB_ID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        # An array's first task has the array's job id, which names the whole array.
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    given = env.get("SLURM_JOB_END_TIME", "")
    if given.isdigit() and int(given) > 0:
        return AllocationEnd(float(given), f"SLURM job {job} (SLURM_JOB_END_TIME)")
    asked = time.time()
    left = parse_slurm_left(run(["squeue", "-h", "-j", job, "-o", "%L"]))
    if left is None:
        return None
    return AllocationEnd(asked + left, f"SLURM job {job} (squeue)")


_SLURM_LEFT = re.compile(r"(?:\d+-)?\d+(?::\d+){0,2}")


def parse_slurm_left(text: str) -> Optional[float]:
    """The seconds of squeue's ``%L`` (``1-02:03:04``, ``2:03:04``, ``3:04``; after a
    day, ``1-02`` and ``1-02:03`` are hours and minutes); None for ``UNLIMITED`` or
    ``NOT_SET``. Raises ValueError for anything else."""
    text = text.strip()
    if text in ("UNLIMITED", "NOT_SET", "INVALID"):
        return None
    if not _SLURM_LEFT.fullmatch(text):
        raise ValueError(f"squeue gave the time left as {text!r}")
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    parts = (parts + ["0", "0"])[:3] if days else ["0"] * (3 - len(parts)) + parts
    hours, minutes, seconds = (int(part) for part in parts)
    return float(int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds)


# -- OAR -------------------------------------------------------------------------------
def oar_end(env: Mapping[str, str], started: float) -> AllocationEnd:
    job = env.get("OAR_JOB_ID", "?")
    walltime = env["OAR_JOB_WALLTIME_SECONDS"]
    if not walltime.isdigit():
        raise ValueError(f"OAR_JOB_WALLTIME_SECONDS={walltime!r} is not a number of seconds")
    begun = file_time(env.get("OAR_NODEFILE") or env.get("OAR_FILE_NODES"))
    how = "OAR_JOB_WALLTIME_SECONDS from the node file's time"
    if begun is None:
        begun, how = started, "OAR_JOB_WALLTIME_SECONDS from the minion's start"
    return AllocationEnd(begun + int(walltime), f"OAR job {job} ({how})")


# -- Grid Engine -----------------------------------------------------------------------
def sge_end(env: Mapping[str, str], run: Runner) -> Optional[AllocationEnd]:
    job = env["JOB_ID"]
    h_rt = parse_h_rt(run(["qstat", "-j", job]))
    if h_rt is None:
        return None
    spool = env.get("SGE_JOB_SPOOL_DIR")
    begun = file_time(os.path.join(spool, "config") if spool else None)
    how = "h_rt from the job's spool directory time"
    if begun is None:
        begun, how = time.time(), "h_rt from the minion's start"
    return AllocationEnd(begun + h_rt, f"Grid Engine job {job} ({how})")


_H_RT = re.compile(r"(?:^|[\s,])h_rt=([0-9:]+)")


def parse_h_rt(text: str) -> Optional[float]:
    """The ``h_rt`` of ``qstat -j``'s resource lists, in seconds (qstat writes seconds;
    ``H:M:S`` is read too); None when the job has no ``h_rt``."""
    match = _H_RT.search(text)
    if match is None:
        return None
    seconds = 0
    for part in match.group(1).split(":"):
        seconds = seconds * 60 + int(part or 0)
    return float(seconds)


def file_time(path: Optional[str]) -> Optional[float]:
    """When ``path`` was last written; None when there is no such file."""
    if not path:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
