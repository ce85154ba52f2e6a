"""The private directories of a test OAR cluster, mounted over the package's.

OAR's commands are set-uid wrappers that read ``/etc/oar/oar.conf`` and the ``oar``
user's home ``/var/lib/oar`` whatever the environment says, so a private cluster needs
its own copies at those paths: :class:`OarRoot` makes them in a temporary directory,
and :meth:`OarRoot.mounts` says where each goes (``tests/services/oar.py`` bind-mounts
them in the cluster's namespace):

* ``etc`` on ``/etc/oar``: the package's files (owners kept), this cluster's
  ``oar.conf`` (:data:`CONFIGURATION`) and the node sshd's new host key;
* ``home`` on ``/var/lib/oar``: the ``oar`` user's new key pair, OAR's runtime files and
  its log, and the jobs' ``BASH_ENV``;
* ``pg`` on ``/var/lib/postgresql``: an empty home for the ``postgres`` user's database.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

HOST = "localhost"
PACKAGE_ETC = Path("/etc/oar")
PACKAGE_HOME = Path("/var/lib/oar")
PG_HOME = Path("/var/lib/postgresql")
PG_PASSWORD = "oar"

#: Changes to the package's oar.conf: the database on the namespace's loopback, the
#: log in the private home, no cpuset manager (no cgroups here), a scheduler pass at
#: most every second and a short security time between jobs, no node check rounds.
CONFIGURATION: dict[str, Optional[str]] = {
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

SSH_CONFIG = """\
Host *
ForwardX11 no
StrictHostKeyChecking no
PasswordAuthentication no
AddressFamily inet
UserKnownHostsFile /dev/null
LogLevel ERROR
"""


def edit(text: str, values: Mapping[str, Optional[str]]) -> str:
    """oar.conf's ``text`` with ``values`` set (``None``: the setting commented out)."""
    lines, seen = [], set()
    for line in text.splitlines():
        match = re.match(r"\s*#?\s*([A-Z_0-9]+)\s*=", line)
        name = match.group(1) if match else ""
        active = not line.lstrip().startswith("#")
        if name in values and active:
            value = values[name]
            if value is not None and name not in seen:
                lines.append(f'{name}="{value}"')
                seen.add(name)
            else:
                lines.append("#" + line)
        else:
            lines.append(line)
    lines += [f'{n}="{v}"' for n, v in values.items() if v is not None and n not in seen]
    return "\n".join(lines) + "\n"


class OarRoot:
    """The ``etc``, ``home`` and ``pg`` directories of a cluster in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.etc = directory / "etc"
        self.home = directory / "home"
        self.pg = directory / "pg"

    def mounts(self) -> list[tuple[Path, Path]]:
        """``(private directory, the package's path it is mounted on)`` pairs."""
        return [(self.etc, PACKAGE_ETC), (self.home, PACKAGE_HOME), (self.pg, PG_HOME)]

    @property
    def log(self) -> Path:
        return self.home / "oar.log"

    def make(self) -> None:
        self.make_etc()
        self.make_home()
        self.pg.mkdir()
        _chown_tree(self.pg, "postgres")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation

    def make_etc(self) -> None:
        """The package's /etc/oar with this oar.conf, and sshd_config with a new host
        key, listening on the loopback only."""
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

    def make_home(self) -> None:
        """The oar user's home: the package's shell files, a key pair that the node's
        sshd accepts (``OAR_KEY=1``, as OAR's own set-up writes it), and the jobs'
        ``BASH_ENV``."""
        self.home.mkdir()
        for name in (".bash_oar", ".bash_profile", ".bashrc"):
            if (PACKAGE_HOME / name).exists():
                shutil.copy2(PACKAGE_HOME / name, self.home / name)
        # The package's .batch_job_bashrc sources ~/.bashrc, which may do anything
        # (pyenv's init recurses through BASH_ENV); this one puts minionize's console
        # scripts first on the PATH, as on a cluster where minionize is installed on
        # every node.
        scripts = _scripts_directory()
        (self.home / ".batch_job_bashrc").write_text(
            f'case ":$PATH:" in *":{scripts}:"*) ;; *) export PATH="{scripts}:$PATH" ;; esac\n'
        )
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700)
        _keygen(ssh / "id_ed25519")
        public = (ssh / "id_ed25519.pub").read_text().strip()
        (ssh / "authorized_keys").write_text(f'environment="OAR_KEY=1" {public}\n')
        (ssh / "config").write_text(SSH_CONFIG)
        _chown_tree(self.home, "oar")
        self.home.chmod(0o755)


def _scripts_directory() -> Path:
    """Where minionize's console scripts are: beside this Python, else on the PATH."""
    beside = Path(sys.executable).parent
    found = shutil.which("minionize")
    return Path(found).parent if found and not (beside / "minionize").exists() else beside


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oar", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
