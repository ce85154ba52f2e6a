"""A private single-node Son of Grid Engine cluster (sge_qmaster + sge_execd).

Everything lives in one temporary directory: a private ``SGE_ROOT`` (links to the
Debian package's binaries and utilities, the cell ``default`` with its bootstrap file,
classic spooling, the qmaster and execd spool directories). The daemons and every
client command run in a private UTS and network namespace (``unshare --uts --net``,
held open by a small process): the host is called ``localhost`` there, which resolves
on every machine, and the only network is a loopback interface, so the daemons (which
listen on every address) are reachable from nowhere else and never meet the package's
own daemons, if its install started them. Client commands enter the namespace with
``nsenter`` (see :meth:`SgeCluster.run`). Every daemon is stopped by its PID.

The queue ``all.q`` has :data:`SLOTS` slots and the parallel environment ``smp``
(``qsub -pe smp N`` gives ``NSLOTS=N``); the scheduler runs every second; the notify
time (``qsub -notify``: SIGUSR2 before SIGKILL, SIGUSR1 before SIGSTOP) is
:data:`NOTIFY_SECONDS`. Jobs run as the current user (root in CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional

import pytest

from . import free_port, start_or_skip, user_name, wait_for

#: Where the Debian packages (gridengine-master, -exec, -client) put the binaries.
BINARIES = Path("/usr/lib/gridengine")
UTIL = Path("/usr/share/gridengine/util")
DEFAULT_CONFIGURATION = Path("/usr/share/gridengine/default-configuration")
DAEMONS = ("sge_qmaster", "sge_execd")
CLIENTS = ("qsub", "qstat", "qdel", "qmod", "qconf", "spoolinit", "spooldefaults.bin")
HOST = "localhost"
#: Slots of the queue: more than the machine has is fine (nothing is bound).
SLOTS = 6
NOTIFY_SECONDS = 3
START_TIMEOUT = 30.0

BOOTSTRAP = """\
# Version: 8.1.9
admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         {common};{spool}
binary_path             {binaries}
qmaster_spool_dir       {spool}
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
"""

#: Changes to the package's global configuration: root's jobs allowed (min_uid 0),
#: spool in the directory, no mail, load reports every 5 s.
CONFIGURATION = {
    "execd_spool_dir": "{execd_spool}",
    "min_uid": "0",
    "min_gid": "0",
    "mailer": "/bin/true",
    "load_report_time": "00:00:05",
}

#: Changes to the default scheduler configuration: a pass every second, and one at once
#: when a job is submitted or ends.
SCHEDULER = {
    "schedule_interval": "0:0:1",
    "flush_submit_sec": "1",
    "flush_finish_sec": "1",
    "job_load_adjustments": "NONE",
    "load_adjustment_decay_time": "0:0:0",
}

PARALLEL_ENVIRONMENT = """\
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
"""

#: Changes to the queue template (``qconf -sq``).
QUEUE = {
    "qname": "all.q",
    "hostlist": HOST,
    "slots": str(SLOTS),
    "load_thresholds": "NONE",
    "pe_list": "smp",
    "notify": f"00:00:{NOTIFY_SECONDS:02d}",
}

#: The namespace holder: names the host, brings the loopback interface up, says so,
#: and sleeps until it is told to go.
HOLDER = """\
import fcntl, signal, socket, struct, sys
socket.sethostname(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
request = struct.pack("16sh", b"lo", 0)
flags = struct.unpack("16sh", fcntl.ioctl(sock, 0x8913, request))[1]
fcntl.ioctl(sock, 0x8914, struct.pack("16sh", b"lo", flags | 1))
print("ready", flush=True)
signal.pause()
"""


class SgeError(RuntimeError):
    """A Grid Engine command failed."""


def edit(text: str, values: Mapping[str, str]) -> str:
    """``text`` (``name value`` lines, as qconf prints them) with ``values`` replaced."""
    lines = []
    for line in text.splitlines():
        name = line.split(None, 1)[0] if line.strip() else ""
        lines.append(f"{name} {values[name]}" if name in values else line)
    return "\n".join(lines) + "\n"


class SgeCluster:
    """sge_qmaster and sge_execd started in ``directory``; :meth:`stop` ends them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / "root"
        self.common = self.root / "default" / "common"
        self.spool = directory / "spool"
        self.ports = (free_port(), free_port())
        self.holder: Optional[subprocess.Popen[bytes]] = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- environment for clients and jobs ----------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands: the cell's ``SGE_ROOT``, ``SGE_CELL``
        and ports, and a PATH that finds this Python's console scripts, then the
        package's commands. Jobs get it with ``qsub -V``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SGE_", "MINION_"))}
        env.update(
            SGE_ROOT=str(self.root),
            SGE_CELL="default",
            SGE_QMASTER_PORT=str(self.ports[0]),
            SGE_EXECD_PORT=str(self.ports[1]),
        )
        path = env.get("PATH", "/usr/bin:/bin")
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path, str(BINARIES)])
        return env

    def namespace(self) -> list[str]:
        """The command prefix that runs a program in the cluster's namespace."""
        assert self.holder is not None, "the cluster is not started"
        return ["nsenter", f"--target={self.holder.pid}", "--uts", "--net", "--"]

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Make the cell, start both daemons, add the queue, run a first job."""
        for name in DAEMONS + CLIENTS:
            if not (BINARIES / name).exists():
                raise FileNotFoundError(
                    f"{BINARIES / name} not found "
                    "(apt-get install gridengine-master gridengine-exec gridengine-client)"
                )
        for name in ("unshare", "nsenter"):
            if shutil.which(name) is None:
                raise FileNotFoundError(f"{name} not found (util-linux)")
        self.make_cell()
        self.start_holder()
        self.spawn("sge_qmaster")
        self.wait(lambda: self.answers(["qconf", "-sh"]), "sge_qmaster to answer")
        self.run(["qconf", "-as", HOST])
        self.load("-Msconf", "scheduler", edit(self.run(["qconf", "-ssconf"]), SCHEDULER))
        self.load("-Ap", "smp", PARALLEL_ENVIRONMENT)
        self.load("-Aq", "all.q", edit(self.run(["qconf", "-sq"]), QUEUE))
        self.spawn("sge_execd")
        self.wait(self.queue_up, "the queue all.q@localhost to be up (qstat -f)")
        self.first_job()

    def make_cell(self) -> None:
        """The private SGE_ROOT: links to the package, the bootstrap file, the spool."""
        for link in ("bin", "lib", "utilbin"):
            (self.root / link).mkdir(parents=True, exist_ok=True)
            (self.root / link / "lx-amd64").symlink_to(BINARIES)
        (self.root / "util").symlink_to(UTIL)
        self.common.mkdir(parents=True)
        (self.spool / "qmaster").mkdir(parents=True)
        (self.spool / "execd").mkdir(parents=True)
        common, qmaster = self.common, self.spool / "qmaster"
        (common / "bootstrap").write_text(
            BOOTSTRAP.format(common=common, spool=qmaster, binaries=BINARIES)
        )
        (common / "act_qmaster").write_text(HOST + "\n")
        configuration = self.directory / "configuration"
        values = {k: v.format(execd_spool=self.spool / "execd") for k, v in CONFIGURATION.items()}
        configuration.write_text(edit(DEFAULT_CONFIGURATION.read_text(), values))
        resources = UTIL / "resources"
        self.spool_tool("spoolinit", "classic", "libspoolc", f"{common};{qmaster}", "init")
        self.spool_tool("spooldefaults.bin", "configuration", str(configuration))
        self.spool_tool("spooldefaults.bin", "complexes", str(resources / "centry"))
        self.spool_tool("spooldefaults.bin", "usersets", str(resources / "usersets"))
        self.spool_tool("spooldefaults.bin", "managers", user_name())

    def spool_tool(self, name: str, *args: str) -> None:
        env = {**self.env, "LD_LIBRARY_PATH": str(BINARIES)}
        result = subprocess.run(
            [str(BINARIES / name), *args], env=env, capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise SgeError(f"{name} {' '.join(args)} exited {result.returncode}: {output}")

    def start_holder(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--uts", "--net", sys.executable, "-c", HOLDER, HOST],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().decode(errors="replace").strip()
        if line != "ready":
            rest = self.holder.stdout.read().decode(errors="replace")
            self.holder.wait(timeout=10)
            raise SgeError(f"unshare --uts --net failed: {line} {rest}".strip())

    def spawn(self, name: str) -> None:
        """Start a daemon in the foreground (``SGE_ND``), in the namespace."""
        log = open(self.directory / f"{name}.out", "wb")  # noqa: SIM115 (the child owns it)
        try:
            self.processes[name] = subprocess.Popen(
                [*self.namespace(), str(BINARIES / name)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, "SGE_ND": "1"},
                cwd=self.directory,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait(self, condition: object, what: str) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SgeError(f"{name} exited with {process.returncode}: {self.log_tail(name)}")
            return bool(condition())  # type: ignore[operator]

        wait_for(ready, START_TIMEOUT, what, every=0.2)

    def queue_up(self) -> bool:
        """Whether all.q@localhost is listed without a state (``u``: execd unheard of)."""
        try:
            out = self.run(["qstat", "-f", "-q", "all.q"], timeout=10)
        except (SgeError, subprocess.TimeoutExpired):
            return False
        for line in out.splitlines():
            if line.startswith(f"all.q@{HOST}"):
                return len(line.split()) == 5
        return False

    def first_job(self) -> None:
        """Run ``true`` and wait until it has run: the cluster runs jobs."""
        marker = self.directory / "first-job"
        self.run(["qsub", "-b", "y", "-o", "/dev/null", "-j", "y", "touch", str(marker)])
        self.wait(marker.exists, "a first job to run")

    def stop(self) -> None:
        """Delete what is left, then stop every daemon by PID (TERM, then KILL)."""
        if self.holder is None:
            return
        qmaster = self.processes.get("sge_qmaster")
        if qmaster is not None and qmaster.poll() is None:
            try:
                self.run(["qdel", "-f", "-u", user_name()], timeout=10)
            except (SgeError, subprocess.TimeoutExpired):
                pass  # nothing to delete
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is not None:
                _end(process)
        _end(self.holder)
        self.holder = None

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a daemon's output and messages file, for error messages."""
        text = ""
        kind = "qmaster" if name == "sge_qmaster" else f"execd/{HOST}"
        for path in (self.directory / f"{name}.out", self.spool / kind / "messages"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- client commands ---------------------------------------------------------------
    def command(
        self,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Path] = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command in the cluster's namespace, with ``env`` added."""
        return subprocess.run(
            [*self.namespace(), *argv],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run a client command; its stdout, or SgeError."""
        result = self.command(argv, timeout=timeout)
        if result.returncode != 0:
            raise SgeError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()}")
        return result.stdout

    def answers(self, argv: Sequence[str]) -> bool:
        return self.command(argv, timeout=10).returncode == 0

    def load(self, option: str, name: str, text: str) -> None:
        """``qconf -Aq FILE`` and the like, from ``text``."""
        path = self.directory / f"{name}.conf"
        path.write_text(text)
        self.run(["qconf", option, str(path)])

    def qsub(
        self,
        script: Path,
        args: Sequence[str] = (),
        options: Sequence[str] = (),
        cwd: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> str:
        """Submit ``script`` and return the job id; ``env`` is added to the submitting
        environment, which the job gets with ``-V``."""
        result = self.command(
            ["qsub", "-terse", *options, str(script), *args], env=env, cwd=cwd
        )
        if result.returncode != 0:
            raise SgeError(f"qsub exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout.strip().split(".")[0]

    def jobs(self, job_id: Optional[str] = None) -> dict[str, str]:
        """``{job id (1234.5 for array tasks): state}`` of the jobs qstat still lists
        (``r`` running, ``qw`` waiting, ``s`` suspended, ``dr`` being deleted...)."""
        out = self.run(["qstat", "-u", "*"], timeout=10)
        states: dict[str, str] = {}
        for line in out.splitlines()[2:]:
            parts = line.split()
            if len(parts) < 8 or (job_id is not None and parts[0] != job_id):
                continue
            # After the submit/start date and time: the queue (when running), the
            # slots, the array tasks (for an array job).
            rest = parts[8:] if "@" in parts[7] else parts[7:]
            for task in _task_ids(rest[1] if len(rest) > 1 else ""):
                states[f"{parts[0]}.{task}" if task else parts[0]] = parts[4]
        return states

    def running(self, job_id: str) -> list[str]:
        return sorted(k for k, v in self.jobs(job_id).items() if v == "r")

    def wait_finished(self, job_id: str, timeout: float) -> None:
        """Wait until qstat lists nothing of ``job_id`` any more."""
        wait_for(lambda: not self.jobs(job_id), timeout, f"job {job_id} to finish", every=0.2)


def _task_ids(tasks: str) -> list[str]:
    """qstat's ja-task-ID column: ``3``, ``1-4:1`` (waiting), ``1,3``, or nothing."""
    if not tasks:
        return [""]
    ids: list[str] = []
    for part in tasks.split(","):
        if "-" in part:
            span, _, step = part.partition(":")
            first, last = (int(x) for x in span.split("-"))
            ids += [str(i) for i in range(first, last + 1, int(step or 1))]
        else:
            ids.append(part)
    return ids


def _end(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s (sge_qmaster takes a few seconds to shut down)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()



def start_cluster(directory: Path) -> SgeCluster:
    """Start a cluster, or skip the test (fail under CI=true) saying why it cannot."""
    return start_or_skip("sge", SgeCluster(directory), (SgeError, subprocess.SubprocessError), DAEMONS,
                         "sge_execd must run as root to start jobs")


_running: dict[str, SgeCluster] = {}


@pytest.fixture(scope="session")
def sge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SgeCluster]:
    """A single-node Grid Engine cluster, started once for the session (every module
    that imports this fixture shares it) and stopped by PID at its end."""
    if "cluster" not in _running:
        started = time.monotonic()
        _running["cluster"] = start_cluster(tmp_path_factory.mktemp("sge"))
        print(f"\nGrid Engine started in {time.monotonic() - started:.1f}s")
    try:
        yield _running["cluster"]
    finally:
        cluster = _running.pop("cluster", None)
        if cluster is not None:
            cluster.stop()
