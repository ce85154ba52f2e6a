"""A private single-node OAR 2.5 cluster (PostgreSQL, Almighty, the node's sshd).

OAR's commands are set-uid wrappers that read ``/etc/oar/oar.conf`` and the ``oar``
user's home ``/var/lib/oar``, whatever the environment says. So the cluster lives in a
private mount, UTS and network namespace (``unshare --mount --uts --net``, held open by
a small process) where three directories of one temporary directory are mounted over
the package's: ``etc`` on ``/etc/oar`` (a copy of the package's, with this cluster's
``oar.conf`` and the node sshd's host key), ``home`` on ``/var/lib/oar`` (the ``oar``
user's ssh key, OAR's runtime files and its log) and ``pg`` on ``/var/lib/postgresql``
(the database cluster, owned by ``postgres``). The host is called ``localhost`` there
and the only network is a loopback interface, so the default ports (PostgreSQL 5432,
Almighty 6666, the node's sshd 6667) are this cluster's alone, reachable from nowhere
else, and never meet the daemons the packages' install may have started.

The daemons: ``postgres`` (as ``postgres``, trust authentication on 127.0.0.1 and the
socket), ``sshd -D`` with OAR's ``sshd_config`` (the server reaches the node as ``oar``
with its key, as on a real cluster), and ``Almighty`` (as ``oar``, through the package's
wrapper), which starts the scheduler, ``bipbip``, ``sarko`` and the others. Client
commands enter the namespace with ``nsenter`` (see :meth:`OarCluster.run`). Every
daemon is stopped by its PID.

The node ``localhost`` has :data:`CORES` cores as resources (``oarnodesetting``); the
scheduler runs at most every second. Jobs run as the current user (root in CI).
"""

from __future__ import annotations

import os
import pwd
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

from . import unavailable, wait_for

HOST = "localhost"
#: Resources of the node: one per core.
CORES = 4
START_TIMEOUT = 60.0
PACKAGE_ETC = Path("/etc/oar")
PACKAGE_HOME = Path("/var/lib/oar")
PG_HOME = Path("/var/lib/postgresql")
OAR_LIB = Path("/usr/lib/oar")
SSHD = Path("/usr/sbin/sshd")
CLIENTS = ("oarsub", "oarstat", "oardel", "oarnodes", "oarnodesetting")
PG_PASSWORD = "oar"

#: Changes to the package's oar.conf: the database on this namespace's loopback, the
#: log in the private home, no cpuset manager (no cgroups here), a scheduler pass at
#: most every second and a short security time between jobs, no node check rounds.
CONFIGURATION = {
    "DB_HOSTNAME": "127.0.0.1",
    "DB_PORT": "5432",
    "DB_BASE_PASSWD": PG_PASSWORD,
    "DB_BASE_PASSWD_RO": PG_PASSWORD,
    "SERVER_HOSTNAME": HOST,
    "LOG_FILE": str(PACKAGE_HOME / "oar.log"),
    "LOG_LEVEL": "3",
    "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD": None,
    "JOB_RESOURCE_MANAGER_FILE": None,
    "SCHEDULER_MIN_TIME_BETWEEN_2_CALLS": "1",
    "SCHEDULER_JOB_SECURITY_TIME": "1",
    "SCHEDULER_GANTT_HOLE_MINIMUM_TIME": "1",
    "FINAUD_FREQUENCY": "3600",
}

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


def edit(text: str, values: Mapping[str, Optional[str]]) -> str:
    """oar.conf's ``text`` with ``values`` set (``None``: the setting removed)."""
    lines, seen = [], set()
    for line in text.splitlines():
        match = re.match(r"\s*#?\s*([A-Z_0-9]+)\s*=", line)
        name = match.group(1) if match else ""
        if name in values:
            if name not in seen and values[name] is not None and not line.lstrip().startswith("#"):
                lines.append(f'{name}="{values[name]}"')
                seen.add(name)
            elif not line.lstrip().startswith("#"):
                lines.append("#" + line)
            else:
                lines.append(line)
        else:
            lines.append(line)
    lines += [f'{n}="{v}"' for n, v in values.items() if v is not None and n not in seen]
    return "\n".join(lines) + "\n"


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, user: str) -> None:
    uid, gid = _ids(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


class OarCluster:
    """PostgreSQL, the node's sshd and Almighty started in ``directory``; :meth:`stop`
    ends them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.etc = directory / "etc"
        self.home = directory / "home"
        self.pg = directory / "pg"
        self.holder: Optional[subprocess.Popen[bytes]] = None
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

    def namespace(self) -> list[str]:
        """The command prefix that runs a program in the cluster's namespace."""
        assert self.holder is not None, "the cluster is not started"
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--uts", "--net", "--"]

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Make the private directories, start the daemons, add the node's cores, run
        a first job."""
        self.check_installed()
        self.make_directories()
        self.start_holder()
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

    def check_installed(self) -> None:
        for path in [SSHD, Path("/usr/sbin/Almighty"), OAR_LIB / "oarexec", PG_HOME,
                     *(Path("/usr/bin") / n for n in CLIENTS if n != "oarnodesetting")]:
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} not found (apt-get install oar-server oar-node oar-user "
                    "oar-server-pgsql oar-user-pgsql postgresql openssh-server)"
                )
        if self.postgres_bin() is None:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql)")
        for name in ("unshare", "nsenter", "setpriv", "ssh-keygen"):
            if shutil.which(name) is None:
                raise FileNotFoundError(f"{name} not found")

    @staticmethod
    def postgres_bin() -> Optional[Path]:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        return found[-1].parent if found else None

    def make_directories(self) -> None:
        """``etc``: the package's /etc/oar with this oar.conf and a new host key;
        ``home``: the oar user's home with a new key pair; ``pg``: an empty home for
        postgres. The directory is traversable (the daemons run as oar and postgres)."""
        self.directory.chmod(0o755)
        shutil.copytree(PACKAGE_ETC, self.etc, symlinks=True,
                        ignore=shutil.ignore_patterns("oar_ssh_host_*"))
        for path in [self.etc, *self.etc.rglob("*")]:
            owner = (PACKAGE_ETC / path.relative_to(self.etc)).stat()
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        conf = self.etc / "oar.conf"
        conf.write_text(edit(conf.read_text(), CONFIGURATION))
        host_key = self.etc / "oar_ssh_host_ed25519_key"
        _keygen(host_key)
        sshd_config = self.etc / "sshd_config"
        sshd_config.write_text(re.sub(
            r"(?m)^(HostKey|UsePrivilegeSeparation|KeepAlive)\b.*$", "",
            sshd_config.read_text(),
        ) + f"HostKey {PACKAGE_ETC / host_key.name}\nListenAddress 127.0.0.1\n")
        self.home.mkdir()
        for name in (".bash_oar", ".bash_profile", ".bashrc"):
            if (PACKAGE_HOME / name).exists():
                shutil.copy2(PACKAGE_HOME / name, self.home / name)
        # OAR's BASH_ENV for the jobs. The package's sources ~/.bashrc, which may do
        # anything (pyenv's init recurses through BASH_ENV); this one puts this
        # Python's console scripts (minionize...) first on the PATH, as on a cluster
        # where minionize is installed on every node.
        scripts = Path(sys.executable).parent
        (self.home / ".batch_job_bashrc").write_text(
            f'case ":$PATH:" in *":{scripts}:"*) ;; *) export PATH="{scripts}:$PATH" ;; esac\n'
        )
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700)
        _keygen(ssh / "id_ed25519")
        public = (ssh / "id_ed25519.pub").read_text().strip()
        (ssh / "authorized_keys").write_text(f'environment="OAR_KEY=1" {public}\n')
        (ssh / "config").write_text(
            "Host *\nForwardX11 no\nStrictHostKeyChecking no\nPasswordAuthentication no\n"
            "AddressFamily inet\nUserKnownHostsFile /dev/null\nLogLevel ERROR\n"
        )
        _chown_tree(self.home, "oar")
        self.home.chmod(0o755)
        (self.home / ".batch_job_bashrc").chmod(0o644)
        self.pg.mkdir()
        _chown_tree(self.pg, "postgres")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation

    def start_holder(self) -> None:
        mounts = [str(self.etc), str(PACKAGE_ETC), str(self.home), str(PACKAGE_HOME),
                  str(self.pg), str(PG_HOME)]
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--net", sys.executable, "-c", HOLDER, HOST, *mounts],
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

    def start_postgres(self) -> None:
        binaries = self.postgres_bin()
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
                [*self.namespace(), *command],
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
        if self.holder is None:
            return
        for name in ("Almighty", "sshd", "postgres"):
            process = self.processes.pop(name, None)
            if process is not None:
                _end(process)
        for pid in self.pids():
            if pid != self.holder.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it ended meanwhile
        _end(self.holder)
        self.holder = None

    def pids(self) -> list[int]:
        """The processes in the cluster's network namespace."""
        assert self.holder is not None
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "net") == mine:
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone, or a kernel thread
        return found

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a daemon's output (and OAR's log), for error messages."""
        text = ""
        paths = [self.directory / f"{name}.out"]
        if name == "Almighty":
            paths.append(self.home / "oar.log")
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
            [*self.namespace(), *argv],
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


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oar", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


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
    if os.geteuid() != 0:
        unavailable("oar", "the namespace and OAR's daemons need root")
    cluster = OarCluster(directory)
    try:
        cluster.start()
    except FileNotFoundError as error:
        cluster.stop()
        unavailable("oar", str(error))
    except (OarError, AssertionError, OSError, subprocess.SubprocessError) as error:
        logs = "\n".join(f"--- {n}\n{cluster.log_tail(n)}" for n in ("postgres", "sshd", "Almighty"))
        cluster.stop()
        unavailable("oar", f"could not start: {error}\n{logs}")
    return cluster


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
