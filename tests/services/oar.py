"""A private single-node OAR 2.5 cluster (PostgreSQL, Almighty, the node's sshd).

The cluster lives in a private mount, UTS and network namespace (:class:`Namespace`:
``unshare --mount --uts --net``, held open by a small process) where the directories of
``tests/services/oar_root.py`` are mounted over the package's ``/etc/oar``,
``/var/lib/oar`` and ``/var/lib/postgresql``. The host is called ``localhost`` there
and the only network is a loopback interface, so the default ports (PostgreSQL 5432,
Almighty 6666, the node's sshd 6667) are this cluster's alone, reachable from nowhere
else, and never meet the daemons the packages' install may have started.

The daemons: ``postgres`` (as ``postgres``, trust authentication on 127.0.0.1 and the
socket), ``sshd -D`` with OAR's ``sshd_config`` (the server reaches the node as ``oar``
with its key, as on a real cluster), and ``Almighty`` (as ``oar``, through the package's
wrapper), which starts the scheduler, ``bipbip``, ``sarko`` and the others. Client
commands enter the namespace with ``nsenter`` (see :meth:`OarCluster.command`). Every
daemon is stopped by its PID, then the jobs' processes left in the namespace.

The node ``localhost`` has :data:`CORES` cores as resources (``oarnodesetting``); the
scheduler runs at most every second. Jobs run as the current user (root in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional

import pytest

from . import start_or_skip, wait_for
from .oar_root import HOST, PACKAGE_ETC, PG_HOME, PG_PASSWORD, OarRoot

#: Resources of the node: one per core.
CORES = 4
START_TIMEOUT = 60.0
OAR_LIB = Path("/usr/lib/oar")
SSHD = Path("/usr/sbin/sshd")
CLIENTS = ("oarsub", "oarstat", "oardel", "oarnodes")
DAEMONS = ("postgres", "sshd", "Almighty")

#: The namespace holder: names the host, brings the loopback interface up, mounts the
#: private directories (argv: host, then source target pairs), says so, and sleeps
#: until it is told to go.
HOLDER = """\
import fcntl, signal, socket, struct, subprocess, sys
socket.sethostname(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
request = struct.pack("16sh", b"lo", 0)
flags = struct.unpack("16sh", fcntl.ioctl(sock, 0x8913, request))[1]
fcntl.ioctl(sock, 0x8914, struct.pack("16sh", b"lo", flags | 1))
pairs = sys.argv[2:]
for source, target in zip(pairs[::2], pairs[1::2]):
    subprocess.run(["mount", "--bind", source, target], check=True)
print("ready", flush=True)
signal.pause()
"""


class OarError(RuntimeError):
    """An OAR command failed."""


class Namespace:
    """The private mount, UTS and network namespace, held open by a process."""

    def __init__(self) -> None:
        self.holder: Optional[subprocess.Popen[bytes]] = None

    def start(self, mounts: Sequence[tuple[Path, Path]]) -> None:
        pairs = [str(path) for pair in mounts for path in pair]
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--net", sys.executable, "-c", HOLDER, HOST, *pairs],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().decode(errors="replace").strip()
        if line != "ready":
            rest = self.holder.stdout.read().decode(errors="replace")
            self.holder.wait(timeout=10)
            self.holder = None
            raise OarError(f"unshare --mount --uts --net failed: {line} {rest}".strip())

    @property
    def started(self) -> bool:
        return self.holder is not None

    def prefix(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        assert self.holder is not None, "the cluster is not started"
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--uts", "--net", "--"]

    def pids(self) -> list[int]:
        """The processes in the namespace, its holder left out."""
        assert self.holder is not None
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                try:
                    if os.readlink(entry / "ns" / "net") == mine:
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone, or a kernel thread
        return found

    def stop(self) -> None:
        """SIGKILL to what is left in the namespace, then end the holder."""
        if self.holder is None:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended meanwhile
        _end(self.holder)
        self.holder = None


class OarCluster:
    """PostgreSQL, the node's sshd and Almighty started in ``directory``; :meth:`stop`
    ends them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = OarRoot(directory)
        self.namespace = Namespace()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- environment for clients and jobs ----------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands: a PATH that finds this Python's console
        scripts first. OAR passes none of it to jobs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OAR", "MINION_"))}
        env["PWD"] = str(self.directory)
        path = env.get("PATH", "/usr/bin:/bin")
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
        return env

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Make the private directories, start the daemons, add the node's cores, run
        a first job."""
        check_installed()
        self.directory.chmod(0o755)  # the daemons run as oar and postgres
        self.root.make()
        self.namespace.start(self.root.mounts())
        self.start_postgres()
        self.create_database()
        self.spawn("sshd", [str(SSHD), "-D", "-e", "-f", str(PACKAGE_ETC / "sshd_config")])
        self.spawn("Almighty", ["/usr/sbin/Almighty"])
        self.run(["oarproperty", "-a", "host", "-c"])
        self.run(["oarproperty", "-a", "cpu"])
        self.run(["oarproperty", "-a", "core"])
        for core in range(CORES):
            self.run(["oarnodesetting", "-a", "-h", HOST, "-p", f"host={HOST}",
                      "-p", "cpu=1", "-p", f"core={core + 1}", "-p", f"cpuset={core}"])
        self.wait(self.node_alive, f"the {CORES} resources of {HOST} to be Alive (oarnodes)")
        self.first_job()

    def start_postgres(self) -> None:
        binaries = postgres_bin()
        assert binaries is not None
        data = PG_HOME / "data"
        self.run_as("postgres", [str(binaries / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres", "-E", "UTF8", "--no-sync"], timeout=120)
        self.spawn("postgres", [str(binaries / "postgres"), "-D", str(data), "-k", str(PG_HOME),
                                "-c", "listen_addresses=127.0.0.1", "-p", "5432",
                                "-c", "fsync=off"], user="postgres")
        self.wait(lambda: self.command(["pg_isready", "-h", "127.0.0.1", "-U", "postgres"],
                                       timeout=10).returncode == 0, "PostgreSQL to answer")

    def create_database(self) -> None:
        """OAR's database, without the admission rule that refuses root's jobs (the
        tests' jobs run as the user running the tests, root in CI)."""
        self.run(["oar-database", "--create", "--db-admin-user=postgres",
                  f"--db-admin-pass={PG_PASSWORD}", "--force-yes"], timeout=120)
        self.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "oar", "-c",
                  "DELETE FROM admission_rules WHERE rule LIKE '%root and oar users%'"])

    def run_as(self, user: str, argv: Sequence[str], timeout: float = 30.0) -> str:
        result = self.command(_as_user(user, argv), timeout=timeout)
        if result.returncode != 0:
            raise OarError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()}")
        return result.stdout

    def spawn(self, name: str, argv: Sequence[str], user: Optional[str] = None) -> None:
        """Start a daemon in the foreground, in the namespace."""
        log = open(self.directory / f"{name}.out", "wb")  # noqa: SIM115 (the child owns it)
        command = _as_user(user, argv) if user else list(argv)
        try:
            self.processes[name] = subprocess.Popen(
                [*self.namespace.prefix(), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.directory,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait(self, condition: object, what: str) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise OarError(f"{name} exited with {process.returncode}: {self.log_tail(name)}")
            return bool(condition())  # type: ignore[operator]

        wait_for(ready, START_TIMEOUT, what, every=0.2)

    def node_alive(self) -> bool:
        try:
            out = self.run(["oarnodes", "-s"], timeout=10)
        except (OarError, subprocess.TimeoutExpired):
            return False
        return out.count("Alive") >= CORES

    def first_job(self) -> None:
        """Run ``touch`` and wait until it has run: the cluster runs jobs."""
        marker = self.directory / "first-job"
        self.oarsub(["-l", "core=1", f"touch {marker}"], cwd=self.directory)
        self.wait(marker.exists, "a first job to run")

    def stop(self) -> None:
        """Stop every daemon by PID (TERM, then KILL), then what is left in the
        namespace (the jobs' processes, which OAR detaches from its server), then the
        namespace."""
        if not self.namespace.started:
            return
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is not None:
                _end(process)
        self.namespace.stop()

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a daemon's output (and OAR's log), for error messages."""
        text = ""
        paths = [self.directory / f"{name}.out"]
        if name == "Almighty":
            paths.append(self.root.log)
        for path in paths:
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
        # oarsub takes the job's directory from PWD.
        where = {"PWD": str(cwd)} if cwd is not None else {}
        return subprocess.run(
            [*self.namespace.prefix(), *argv],
            env={**self.env, **where, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run a client command; its stdout, or OarError."""
        result = self.command(argv, timeout=timeout)
        if result.returncode != 0:
            raise OarError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()}")
        return result.stdout

    def oarsub(self, args: Sequence[str], cwd: Optional[Path] = None,
               env: Optional[Mapping[str, str]] = None) -> list[str]:
        """``oarsub ARGS``; the job ids it printed (one per array sub-job)."""
        result = self.command(["oarsub", *args], env=env, cwd=cwd)
        if result.returncode != 0:
            raise OarError(f"oarsub {' '.join(args)} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()}")
        return re.findall(r"(?m)^OAR_JOB_ID=(\d+)", result.stdout)


    def jobs(self) -> dict[str, str]:
        """``{job id: state}`` of the jobs oarstat still lists (``W`` waiting, ``R``
        running, ``F`` finishing...)."""
        states = {}
        for line in self.run(["oarstat"], timeout=20).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                states[parts[0]] = parts[1]
        return states

    def details(self, job: str) -> str:
        """``oarstat -f -j JOB``: the job's state, times, events, resubmission."""
        return self.run(["oarstat", "-f", "-j", job], timeout=20)

    def wait_idle(self, timeout: float) -> None:
        """Wait until oarstat lists no job (resubmitted ones included)."""
        wait_for(lambda: not self.jobs(), timeout, "every OAR job to end", every=0.5)

    def delete_all(self) -> None:
        """``oardel`` every job left, and wait until they are gone."""
        left = list(self.jobs())
        if left:
            self.command(["oardel", *left], timeout=30)
        self.wait_idle(60)


def check_installed() -> None:
    for path in [SSHD, Path("/usr/sbin/Almighty"), OAR_LIB / "oarexec", PG_HOME,
                 *(Path("/usr/bin") / n for n in CLIENTS)]:
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found (apt-get install oar-server oar-node oar-user "
                "oar-server-pgsql oar-user-pgsql postgresql openssh-server)"
            )
    if postgres_bin() is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql)")
    for name in ("unshare", "nsenter", "setpriv", "ssh-keygen"):
        if shutil.which(name) is None:
            raise FileNotFoundError(f"{name} not found")


def postgres_bin() -> Optional[Path]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


def _as_user(user: Optional[str], argv: Sequence[str]) -> list[str]:
    if user is None:
        return list(argv)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def _end(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; then whatever is left of its session."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the session is gone with it
    if process.stdout is not None:
        process.stdout.close()


def start_cluster(directory: Path) -> OarCluster:
    """Start a cluster, or skip the test (fail under CI=true) saying why it cannot."""
    return start_or_skip("oar", OarCluster(directory), (OarError, subprocess.SubprocessError), DAEMONS,
                         "the namespace and OAR's daemons need root")


_running: dict[str, OarCluster] = {}


@pytest.fixture(scope="session")
def oar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OarCluster]:
    """A single-node OAR cluster, started once for the session (every module that
    imports this fixture shares it) and stopped by PID at its end."""
    if "cluster" not in _running:
        started = time.monotonic()
        _running["cluster"] = start_cluster(tmp_path_factory.mktemp("oar"))
        print(f"\nOAR started in {time.monotonic() - started:.1f}s")
    try:
        yield _running["cluster"]
    finally:
        cluster = _running.pop("cluster", None)
        if cluster is not None:
            cluster.stop()
