"""A private single-node SLURM cluster (munge + slurmctld + slurmd) on 127.0.0.1.

Everything lives in one temporary directory: the munge key and socket, slurm.conf,
cgroup.conf, the state and spool directories, the logs (the sockets go to a short
directory under /tmp instead when the path is too long for a Unix socket). Client commands find the
cluster through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`). Every daemon is stopped by
its PID. Jobs run as the current user (root in CI) and, because sbatch exports the
submitting environment by default (``--export=ALL``), they run the same Python and the
same minionize as the tests when ``PATH`` starts with the directory of ``sys.executable``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional

import pytest

from . import free_port, start_or_skip, user_name, wait_for

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "scontrol")
#: CPUs the node declares: more than the machine has is fine (nothing is bound).
NODE_CPUS = 8
START_TIMEOUT = 30.0

SLURM_CONF = """\
ClusterName=minionize
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
AuthInfo=socket={munge}/munge.socket
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={runtime}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
"""

#: cgroup/v2 is fatal on hybrid-cgroup kernels; v1 loads and, with the plugins above,
#: never touches a cgroup.
CGROUP_CONF = "CgroupPlugin=cgroup/v1\n"


def find_binary(name: str) -> Optional[str]:
    """``name`` on PATH or in the sbin directories (not on a user's PATH)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(name, path=path)


class SlurmError(RuntimeError):
    """A SLURM command failed."""


class SlurmCluster:
    """munged, slurmctld and slurmd started in ``directory``; :meth:`stop` ends them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.conf = directory / "slurm.conf"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.binaries: dict[str, str] = {}
        self._runtime: Optional[Path] = None
        self._own_runtime = False

    # -- environment for clients and jobs ----------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (and, through sbatch, the jobs): the
        cluster's ``SLURM_CONF`` and a PATH that finds this Python's console scripts."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MINION_"))}
        env["SLURM_CONF"] = str(self.conf)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the three daemons and wait until the node is idle. Raises SlurmError."""
        for name in DAEMONS + CLIENTS:
            found = find_binary(name)
            if found is None:
                raise FileNotFoundError(
                    f"{name} not found (apt-get install slurmctld slurmd slurm-client munge)"
                )
            self.binaries[name] = found
        d = self.directory
        (d / "state").mkdir(parents=True, exist_ok=True)
        runtime = self.runtime_dir()
        munge = runtime / "munge"
        munge.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o755)
        (runtime / "spool").mkdir(parents=True, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(
            SLURM_CONF.format(
                d=d,
                munge=munge,
                runtime=runtime,
                user=user_name(),
                ctld_port=free_port(),
                slurmd_port=free_port(),
                cpus=NODE_CPUS,
            )
        )
        (d / "cgroup.conf").write_text(CGROUP_CONF)

        socket_path = munge / "munge.socket"
        self._spawn(
            "munged",
            [
                self.binaries["munged"],
                "-F",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--log-file={munge / 'munged.log'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                "--force",
            ],
        )
        self._wait(lambda: socket_path.exists(), "the munge socket")
        self._spawn("slurmctld", [self.binaries["slurmctld"], "-D", "-f", str(self.conf)])
        self._spawn(
            "slurmd", [self.binaries["slurmd"], "-D", "-N", "localhost", "-f", str(self.conf)]
        )
        self._wait(lambda: self.node_state() == "idle", "the SLURM node to be idle (sinfo)")

    def stop(self) -> None:
        """Cancel what is left, then stop every daemon by PID (TERM, then KILL)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(
                [self.binaries["scancel"], "--user", user_name()],
                env=self.env,
                capture_output=True,
                timeout=10,
            )
            self._wait_quiet(lambda: not self.jobs(), 10.0)
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._own_runtime and self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)

    def runtime_dir(self) -> Path:
        """Where the Unix sockets go (munge's, slurmstepd's in the spool): ``directory``,
        or a short directory under /tmp when socket paths there would be too long
        (108 bytes at most; slurmstepd adds about 40 to the spool directory)."""
        if self._runtime is None:
            if len(str(self.directory)) > 50:
                self._runtime = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
                self._own_runtime = True
            else:
                self._runtime = self.directory
        return self._runtime

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.directory / f"{name}.out", "wb")  # noqa: SIM115 (the child owns it)
        try:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        finally:
            log.close()

    def _wait(self, condition: Callable[[], object], what: str) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = self.log_tail(name)
                    raise SlurmError(f"{name} exited with {process.returncode}: {tail}")
            return bool(condition())

        wait_for(ready, START_TIMEOUT, what, every=0.1)

    @staticmethod
    def _wait_quiet(condition: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a daemon's logs, for error messages."""
        text = ""
        for path in (self.directory / f"{name}.out", self.directory / f"{name}.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- client commands ---------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run a client command against this cluster; its stdout, or SlurmError."""
        result = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            command = " ".join(argv)
            raise SlurmError(f"{command} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def node_state(self) -> str:
        try:
            return self.run(["sinfo", "-h", "-o", "%T"], timeout=10).strip()
        except (SlurmError, subprocess.TimeoutExpired):
            return ""

    def sbatch(
        self,
        script: Path,
        args: Sequence[str] = (),
        options: Sequence[str] = (),
        cwd: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Submit ``script`` and return the job id. ``env`` is added to the submitting
        environment, which the job inherits (sbatch's default ``--export=ALL``)."""
        full_env = self.env
        full_env.update(env or {})
        result = subprocess.run(
            ["sbatch", "--parsable", *options, str(script), *args],
            env=full_env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise SlurmError(f"sbatch exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout.strip().split(";")[0]

    def jobs(self, job_id: Optional[str] = None) -> dict[str, str]:
        """``{job id (1234_5 for array tasks): state}`` of the jobs squeue still lists."""
        argv = ["squeue", "-h", "-r", "-o", "%i %T"]
        if job_id is not None:
            argv += ["-j", job_id]
        try:
            out = self.run(argv, timeout=10)
        except SlurmError as error:
            if "Invalid job id" in str(error):
                return {}
            raise
        states: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def running(self, job_id: str) -> list[str]:
        """The array tasks (or job) of ``job_id`` that are RUNNING."""
        return sorted(k for k, v in self.jobs(job_id).items() if v == "RUNNING")

    def wait_finished(self, job_id: str, timeout: float) -> None:
        """Wait until squeue lists nothing of ``job_id`` any more."""
        wait_for(lambda: not self.jobs(job_id), timeout, f"job {job_id} to finish", every=0.2)

    def scancel(self, job_id: str, *options: str) -> None:
        self.run(["scancel", *options, job_id])

    def job_field(self, job_id: str, name: str) -> str:
        """One field of ``scontrol show job`` (e.g. ``NumCPUs``)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id])
        match = re.search(rf"\b{re.escape(name)}=(\S*)", out)
        return match.group(1) if match else ""



def start_cluster(directory: Path) -> SlurmCluster:
    """Start a cluster, or skip the test (fail under CI=true) saying why it cannot."""
    return start_or_skip("slurm", SlurmCluster(directory), (SlurmError, subprocess.SubprocessError), DAEMONS,
                         "slurmd must run as root to start jobs")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node SLURM cluster for the tests of one module, stopped by PID after them
    (import this fixture into the test module)."""
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()
