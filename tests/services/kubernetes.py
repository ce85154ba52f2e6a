"""A real single-node Kubernetes cluster for the tests, as plain processes on 127.0.0.1.

``python -m tests.services.kubernetes build`` (tests/run.sh runs it) builds
kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from the
``k8s.io/kubernetes`` module of the Go module proxy (its staging modules replaced by
their published versions), once: only the binaries are kept, in
``~/.cache/minionize-tests/kubernetes-VERSION-GOVERSION/bin`` (8 to 10 minutes on 2
cores; 1.35+ refuse cgroup v1 hosts, hence 1.34). The pause image is made from the
module's own ``pause.c`` with gcc and umoci: nothing comes from an image registry.

The ``kubernetes`` session fixture starts containerd (Debian's, its own config, root,
state and socket in a temporary directory), etcd, the apiserver, the controller manager,
the scheduler and a kubelet whose node is named 127.0.0.1, all listening on 127.0.0.1
(Ready in about 7 s, about 600 MB); pods must use ``hostNetwork: true`` (the only CNI
plugin is ``loopback``; the service range is API data only). Images are imported with
:meth:`Kubernetes.import_image`. At the end everything is stopped by PID, and what the
kubelet and containerd changed on the host is undone: sysctls, mounts, ``kubepods``
cgroups, ``/var/lib/kubelet``, ``/var/log/containers``, ``/run/containerd``.
Needs root; without it, or a program, or the build, the tests skip (fail under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import alive, free_port, start_or_skip, wait_for

KUBERNETES_VERSION = "1.34.12"
#: The published version of the staging modules (k8s.io/api, client-go...) of that release.
STAGING_VERSION = "v0." + KUBERNETES_VERSION.split(".", 1)[1]
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
BUILD_TIMEOUT = 3600.0


def cache_root() -> Path:
    """``~/.cache/minionize-tests`` (``$XDG_CACHE_HOME`` honoured), as tests/services/docker.py."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "minionize-tests"


def go_version() -> str:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin:/usr/lib/go/bin")
    if go is None:
        raise FileNotFoundError("go not found (Kubernetes is built from source: install Go)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return out


def bin_dir() -> Path:
    """Where the binaries of this Kubernetes built by this Go are kept."""
    return cache_root() / f"kubernetes-{KUBERNETES_VERSION}-{go_version()}" / "bin"


def built() -> bool:
    return all((bin_dir() / name).is_file() for name in COMPONENTS)


def _run(command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> None:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=timeout)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def build(log: Path) -> Path:
    """Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl
    from the ``k8s.io/kubernetes`` module (the Go module proxy, no git), unless kept from
    an earlier build; only the binaries are kept (the module and build caches of the
    build are removed). Returns the directory of the binaries."""
    target = bin_dir()
    if built():
        return target
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin:/usr/lib/go/bin")
    assert go is not None
    work = Path(tempfile.mkdtemp(prefix="kubernetes-build-", dir=cache_root()))
    env = dict(os.environ, GOPATH=str(work / "gopath"), GOMODCACHE=str(work / "gopath" / "mod"),
               GOCACHE=str(work / "gocache"), CGO_ENABLED="0", GOFLAGS="-mod=mod",
               GOTOOLCHAIN="local")
    module = work / "src"
    module.mkdir()
    try:
        (module / "go.mod").write_text(
            "module minionize.test/kubernetes\n\ngo 1.24\n\n"
            f"require k8s.io/kubernetes v{KUBERNETES_VERSION}\n")
        (module / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            + "".join(f'\t_ "k8s.io/kubernetes/cmd/{name}"\n' for name in COMPONENTS) + ")\n")
        outside = work / "outside"  # no go.mod: the download loads no module graph
        outside.mkdir()
        _run([go, "mod", "download", f"k8s.io/kubernetes@v{KUBERNETES_VERSION}"], outside, env,
             log, 1200)
        info = json.loads(subprocess.run(
            [go, "mod", "download", "-json", f"k8s.io/kubernetes@v{KUBERNETES_VERSION}"],
            cwd=outside, env=env, capture_output=True, text=True, check=True).stdout)
        source, gomod = Path(info["Dir"]), Path(info["GoMod"])
        staging = sorted(set(re.findall(r"^\s*(k8s\.io/\S+) => \./staging/", gomod.read_text(), re.M)))
        with open(module / "go.mod", "a") as handle:
            handle.write("\nreplace (\n" + "".join(f"\t{m} => {m} {STAGING_VERSION}\n" for m in staging)
                         + ")\n")
        _run([go, "mod", "tidy"], module, env, log, 1200)
        target.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="bin-", dir=target.parent))
        major, minor = KUBERNETES_VERSION.split(".")[:2]
        stamp = " ".join(f"-X {package}.{name}={value}" for package in (
            "k8s.io/component-base/version", "k8s.io/client-go/pkg/version") for name, value in (
            ("gitVersion", f"v{KUBERNETES_VERSION}"), ("gitMajor", major), ("gitMinor", minor),
            ("gitTreeState", "clean")))  # what `kubectl version` and the node report
        _run([go, "build", "-trimpath", f"-ldflags=-s -w {stamp}", "-o", str(partial) + "/",
              *(f"k8s.io/kubernetes/cmd/{name}" for name in COMPONENTS)], module, env, log,
             BUILD_TIMEOUT)
        shutil.copy(source / "build" / "pause" / "linux" / "pause.c", partial / "pause.c")
        for name in [*COMPONENTS, "pause.c"]:
            (partial / name).replace(target / name)
        partial.rmdir()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return target



# -- the cluster ---------------------------------------------------------------------------

#: The sysctls the kubelet sets (vm.overcommit_memory=1, kernel.panic=10,
#: kernel.panic_on_oops=1): saved before it starts, restored when it stops.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
#: Host paths the kubelet or containerd create whatever their settings: removed at the
#: end when they were not there before.
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/run/containerd"),
              Path("/var/log/pods"))
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
NODE = "127.0.0.1"
SERVICE_RANGE = "10.0.0.0/24"
DAEMONS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
           "kubelet")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class KubernetesError(Exception):
    """The cluster could not start."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)


def make_certificates(pki: Path) -> None:
    """A CA; the apiserver's serving certificate; client certificates for the admin
    (system:masters), the kubelet (system:node:127.0.0.1) and the apiserver's calls to
    the kubelet; the kubelet's serving certificate; the service-account key pair."""
    pki.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "3", "-subj", "/CN=minionize-test-ca", cwd=pki)
    certs = {
        "apiserver": ("/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,"
                      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"),
        "admin": ("/O=system:masters/CN=admin", None),
        "apiserver-kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", None),
        "kubelet-client": (f"/O=system:nodes/CN=system:node:{NODE}", None),
        "kubelet": (f"/CN={NODE}", f"subjectAltName=IP:{NODE},DNS:localhost"),
    }
    for name, (subject, san) in certs.items():
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subject, cwd=pki)
        extra = []
        if san:
            (pki / f"{name}.ext").write_text(san + "\n")
            extra = ["-extfile", f"{name}.ext"]
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "3", *extra, cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {pki / 'ca.crt'}
users:
- name: {user}
  user:
    client-certificate: {pki / f'{user}.crt'}
    client-key: {pki / f'{user}.key'}
contexts:
- name: test
  context: {{cluster: test, user: {user}}}
current-context: test
""")
    return path


def pause_image(log: Path) -> Path:
    """The pause image as an OCI archive (kept beside the binaries): the module's own
    ``pause.c``, built static, made an image by ``umoci``, without a registry."""
    archive = bin_dir() / "pause-oci.tar"
    if archive.exists():
        return archive
    for tool in ("gcc", "umoci"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found (apt-get install gcc umoci)")
    work = Path(tempfile.mkdtemp(prefix="pause-", dir=bin_dir()))
    try:
        tag = PAUSE_IMAGE.rsplit(":", 1)[1]
        _run(["gcc", "-Os", "-static", "-o", "pause", str(bin_dir() / "pause.c")], work, dict(os.environ),
             log, 120)
        _run(["umoci", "init", "--layout", "oci"], work, dict(os.environ), log, 60)
        _run(["umoci", "new", "--image", f"oci:{tag}"], work, dict(os.environ), log, 60)
        _run(["umoci", "insert", "--image", f"oci:{tag}", "pause", "/pause"], work,
             dict(os.environ), log, 60)
        _run(["umoci", "config", "--image", f"oci:{tag}", "--config.entrypoint", "/pause"], work,
             dict(os.environ), log, 60)
        _run(["tar", "-C", "oci", "-cf", "../pause-oci.tar.part", "."], work, dict(os.environ),
             log, 60)
        (bin_dir() / "pause-oci.tar.part").replace(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root``, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(str(root) + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory at or under ``/<name>`` in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


class Kubernetes:
    """containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
    kubelet of one node named 127.0.0.1, as plain processes listening on 127.0.0.1
    only, their files in a temporary directory; :meth:`stop` stops them by PID and
    undoes what they changed on the host. Pods must use ``hostNetwork: true``: the only
    CNI plugin is ``loopback`` (the service range is API data, no route goes there)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mzk8s-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bin = bin_dir()
        self.sysctls: dict[str, str] = {}
        self.host_paths_before = {p: p.exists() for p in HOST_PATHS}
        self.run_containerd_before: set[str] = set()
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.containerd_socket = self.root / "containerd.sock"

    # -- commands --------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` as an admin of this cluster."""
        result = subprocess.run([str(self.bin / "kubectl"), *args], env=self.env(), text=True,
                                capture_output=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}\n"
                                 f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result

    def ctr(self, *args: str, stdin: Any = subprocess.DEVNULL,
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        """``ctr -n k8s.io ARGS`` on this cluster's containerd."""
        return subprocess.run(["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io",
                               *args], capture_output=True, timeout=timeout, stdin=stdin,
                              check=True)

    def import_image(self, archive: Path, base_name: str | None = None) -> None:
        """``ctr images import`` an image archive (``docker save`` or OCI) into the node."""
        extra = ["--base-name", base_name] if base_name else []
        with open(archive, "rb") as data:
            self.ctr("images", "import", *extra, "-", stdin=data)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.root / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- start -----------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.root)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise KubernetesError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")

    def _wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        def check() -> object:
            self._check_alive()
            return condition()
        wait_for(check, timeout, what, every=0.2)

    def start(self) -> None:
        for tool in ("containerd", "runc", "etcd", "ctr", "openssl", "conntrack"):
            if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
                raise FileNotFoundError(f"{tool} not found (tests/run.sh installs it)")
        if not built():
            raise FileNotFoundError(f"Kubernetes {KUBERNETES_VERSION} is not built: "
                                    "python -m tests.services.kubernetes build")
        start = time.monotonic()
        if Path("/run/containerd").is_dir():
            self.run_containerd_before = {str(p) for p in Path("/run/containerd").rglob("*")}
        pki = self.root / "pki"
        make_certificates(pki)
        self._start_containerd()
        etcd_port, apiserver_port = free_port(), free_port()
        server = f"https://127.0.0.1:{apiserver_port}"
        kubeconfig(self.kubeconfig, server, pki, "admin")
        kubelet_kubeconfig = kubeconfig(self.root / "kubelet.kubeconfig", server, pki,
                                        "kubelet-client")
        peer = free_port()
        self._spawn("etcd", [
            "etcd", "--name", "default", "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
        ])
        self._spawn("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver_port}", f"--service-cluster-ip-range={SERVICE_RANGE}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--authorization-mode=Node,RBAC", "--allow-privileged=false",
            "--enable-priority-and-fairness=false", "--profiling=false",
        ])
        self._wait(lambda: self.kubectl("get", "--raw", "/readyz", check=False,
                                        timeout=10).returncode == 0, 120, "kube-apiserver ready")
        self._spawn("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-bootstrapsigner,-tokencleaner",
            "--concurrent-job-syncs=2", "--profiling=false",
        ])
        self._spawn("kube-scheduler", [
            str(self.bin / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            "--profiling=false",
        ])
        self._start_kubelet(kubelet_kubeconfig, pki)
        self._wait(self.node_ready, 180, f"node {NODE} Ready")
        self._wait(lambda: self.kubectl("get", "serviceaccount", "default", check=False,
                                        timeout=10).returncode == 0, 60,
                   "the default service account")
        self.import_image(pause_image(self.root / "pause-build.log"), "registry.k8s.io/pause")
        self.started_in = time.monotonic() - start

    def _start_containerd(self) -> None:
        config = self.root / "containerd.toml"
        cni = self.root / "cni"
        cni.mkdir()
        (cni / "10-loopback.conflist").write_text(
            '{"cniVersion": "0.4.0", "name": "lo", "plugins": [{"type": "loopback"}]}\n')
        cni_bin = "/usr/lib/cni" if Path("/usr/lib/cni/loopback").exists() else "/opt/cni/bin"
        config.write_text(f"""version = 2
root = "{self.root / 'containerd' / 'root'}"
state = "{self.root / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / 'containerd' / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: runc could not lower a container's oom_score_adj
  # below its own, and every sandbox failed to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni}"
""")
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait(lambda: subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "version"], capture_output=True,
            timeout=10).returncode == 0, 60, "containerd to answer")

    def _start_kubelet(self, kubelet_kubeconfig: Path, pki: Path) -> None:
        for sysctl in KUBELET_SYSCTLS:
            self.sysctls[sysctl] = (Path("/proc/sys") / sysctl).read_text().strip()
        config = self.root / "kubelet.yaml"
        config.write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {free_port()}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {free_port()}
tlsCertFile: {pki / 'kubelet.crt'}
tlsPrivateKeyFile: {pki / 'kubelet.key'}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / 'ca.crt'}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://{self.containerd_socket}
imageServiceEndpoint: unix://{self.containerd_socket}
# The images are imported, not pulled: image GC must not delete them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
volumePluginDir: {self.root / 'volume-plugins'}
podLogsDir: {self.root / 'pod-logs'}
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%",
               nodefs.inodesFree: "1%"}}
registerNode: true
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
""")
        self._spawn("kubelet", [
            str(self.bin / "kubelet"), f"--config={config}", f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={self.root / 'kubelet'}", f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={NODE}", "--v=1",
        ])

    def node_ready(self) -> bool:
        result = self.kubectl("get", "node", NODE, "-o",
                              'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                              check=False, timeout=10)
        return result.stdout.strip() == "True"

    # -- stop ------------------------------------------------------------------------------

    def _stop(self, name: str, timeout: float = 20) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _shims(self) -> list[int]:
        """The PIDs of the containerd shims of this cluster's containerd."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and b"containerd-shim" in cmdline[0] \
                    and str(self.containerd_socket).encode() in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """Stop everything by PID, kill the containers left, undo the host changes."""
        self._stop("kubelet")
        # The containers' processes (every one is in a kubepods cgroup), then their shims.
        for cgroup in _cgroup_dirs("kubepods"):
            procs = cgroup / "cgroup.procs"
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in self._shims():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while any(alive(p) for p in self._shims()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd",
                     "containerd"):
            self._stop(name)
        for point in _mounts_under(self.root):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for cgroup in _cgroup_dirs("kubepods"):
            for _ in range(50):
                try:
                    cgroup.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        for sysctl, value in self.sysctls.items():
            (Path("/proc/sys") / sysctl).write_text(value + "\n")
        for path, existed in self.host_paths_before.items():
            if existed:
                continue
            for point in _mounts_under(path):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(path, ignore_errors=True)
        if self.host_paths_before[Path("/run/containerd")]:
            for leftover in sorted(Path("/run/containerd").rglob("*"), key=lambda p: len(p.parts),
                                   reverse=True):
                if str(leftover) not in self.run_containerd_before:
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def kubernetes() -> Iterator[Kubernetes]:
    """A single-node cluster for the session (skips, or fails under CI=true, where it
    cannot run: not root, a program missing, not built)."""
    cluster = start_or_skip("kubernetes", Kubernetes(), (KubernetesError, subprocess.SubprocessError),
                            DAEMONS, "containerd and the kubelet need root")
    print(f"\nkubernetes {KUBERNETES_VERSION}: node Ready, {cluster.started_in:.1f} s after start")
    try:
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    """``python -m tests.services.kubernetes build``: build (or find) the binaries, the
    output in a log file, one line printed."""
    cache_root().mkdir(parents=True, exist_ok=True)
    try:
        go_version()
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        print(f"kubernetes {KUBERNETES_VERSION}: not built: {error}")
        return 1
    if built():
        print(f"kubernetes {KUBERNETES_VERSION}: built already ({bin_dir()})")
        return 0
    log = cache_root() / f"kubernetes-{KUBERNETES_VERSION}-build.log"
    log.write_text("")
    start = time.monotonic()
    try:
        build(log)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"kubernetes {KUBERNETES_VERSION}: build failed after {time.monotonic() - start:.0f} s "
              f"(log: {log}): {str(error)[-1500:]}")
        return 1
    print(f"kubernetes {KUBERNETES_VERSION}: built in {time.monotonic() - start:.0f} s (log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main() if sys.argv[1:] == ["build"] else 2)
