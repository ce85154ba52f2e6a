"""An Apache Pulsar broker for the tests: ``PulsarStandaloneStarter`` from Maven Central.

Apache Pulsar is not packaged for PyPI or Debian, but its broker is a Maven artifact
(``org.apache.pulsar:pulsar-broker``) whose ``PulsarStandaloneStarter`` runs a whole
standalone cluster (broker, one bookie, RocksDB metadata) in one JVM. This module

* resolves it with Maven once per machine: the jars stay in Maven's own cache
  (``~/.m2/repository``) and the class path in ``~/.cache/minionize-tests/pulsar-VERSION``
  (``$XDG_CACHE_HOME`` is honoured), so a later run starts without asking Maven at all;
* starts it on 127.0.0.1 with free ports, its data in a temporary directory, the
  functions worker and stream storage off, and waits until the admin API answers
  ``/admin/v2/brokers/health`` and the ``public/default`` namespace exists;
* stops it by its PID (SIGTERM, SIGKILL after a bound); :meth:`PulsarBroker.kill` and
  :meth:`PulsarBroker.start` again on the same data and ports are a broker restart.

Fixtures (session scope, so the JVM starts once per test session): ``pulsar_server``
yields the :class:`PulsarBroker`; ``pulsar_broker`` yields its service URL
(``pulsar://127.0.0.1:PORT``), for any test that just needs a broker. Import them into
a test module (``from tests.services.pulsar import pulsar_broker``). Without Java, Maven
or the artifacts, the tests skip (fail under CI=true) with what is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from tests.services import free_port, unavailable

PULSAR_VERSION = "4.0.7"
#: Maven resolves about 320 jars (~260 MB) the first time.
RESOLVE_TIMEOUT = 1200.0
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>minionize.tests</groupId>
  <artifactId>pulsar-standalone</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.pulsar</groupId>
      <artifactId>pulsar-broker</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""
#: What Pulsar's own launcher (bin/pulsar) passes to a Java 17 JVM.
JAVA_OPENS = [
    f"--add-opens={module}=ALL-UNNAMED"
    for module in ("java.base/java.io", "java.base/java.util.zip", "java.base/sun.net",
                   "java.management/sun.management",
                   "jdk.management/com.sun.management.internal", "java.base/jdk.internal.misc")
]
#: A small JVM that starts fast: C1 only, serial GC, bounded heap and direct memory
#: (the bookie sizes its caches from the latter).
JAVA_OPTIONS = ["-Xms64m", "-Xmx384m", "-XX:MaxDirectMemorySize=256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-Dio.netty.tryReflectionSetAccessible=true"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "minionize-tests"


def classpath(version: str = PULSAR_VERSION) -> list[str]:
    """The broker's class path, resolved by Maven (cached); :func:`unavailable` if not."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        unavailable("pulsar", "Java and Maven are needed (apt-get install default-jdk-headless maven)")
    home = cache_dir() / f"pulsar-{version}"
    listing = home / "classpath.txt"
    if listing.exists():
        jars = listing.read_text().strip().split(os.pathsep)
        if jars and all(os.path.isfile(jar) for jar in jars):
            return jars
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(POM.format(version=version))
    partial = home / "classpath.tmp"
    try:
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(home / "pom.xml"), "dependency:build-classpath",
             f"-Dmdep.outputFile={partial}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        unavailable("pulsar", f"Maven did not resolve org.apache.pulsar:pulsar-broker:{version} "
                              f"within {RESOLVE_TIMEOUT:g}s")
    if result.returncode != 0 or not partial.exists():
        tail = (result.stdout + result.stderr)[-2000:]
        unavailable("pulsar", f"Maven could not resolve org.apache.pulsar:pulsar-broker:{version}: "
                              f"{tail}")
    partial.replace(listing)
    return listing.read_text().strip().split(os.pathsep)


class PulsarBroker:
    """One standalone broker on 127.0.0.1; its data survive :meth:`kill` and :meth:`stop`,
    so :meth:`start` again is a restart on the same ports."""

    def __init__(self, jars: list[str], root: Path) -> None:
        self.jars = jars
        self.root = root
        self.port = free_port()
        self.web_port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = root / "broker.log"
        #: Seconds the last :meth:`start` took until the broker was ready.
        self.startup_seconds = 0.0
        conf = root / "standalone.conf"
        conf.write_text("\n".join([
            "clusterName=standalone",
            "bindAddress=127.0.0.1",
            "advertisedAddress=127.0.0.1",
            f"brokerServicePort={self.port}",
            f"webServicePort={self.web_port}",
            "functionsWorkerEnabled=false",
            "managedLedgerDefaultEnsembleSize=1",
            "managedLedgerDefaultWriteQuorum=1",
            "managedLedgerDefaultAckQuorum=1",
            "brokerDeleteInactiveTopicsEnabled=false",
            "",
        ]))
        self.conf = conf

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        java = shutil.which("java") or "java"
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [java, *JAVA_OPTIONS, *JAVA_OPENS, "-cp", os.pathsep.join(self.jars),
                 "org.apache.pulsar.PulsarStandaloneStarter", "--config", str(self.conf),
                 "--no-functions-worker", "--no-stream-storage",
                 "--metadata-dir", str(self.root / "metadata"),
                 "--bookkeeper-dir", str(self.root / "bookkeeper"),
                 "--bookkeeper-port", str(free_port())],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = started + START_TIMEOUT
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Pulsar broker exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the Pulsar broker was not ready within {START_TIMEOUT:g}s: "
                                   f"{self.log_tail()}")
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - started

    def _get(self, path: str) -> Optional[str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=10) as response:
                body: str = response.read().decode()
                return body
        except (urllib.error.URLError, OSError):
            return None

    def _ready(self) -> bool:
        if self._get("/admin/v2/brokers/health") != "ok":
            return False
        return "public/default" in (self._get("/admin/v2/namespaces/public") or "")

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the broker crashes (what it wrote is on disk, as after a crash)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signum)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def pulsar_server() -> Iterator[PulsarBroker]:
    """A running standalone broker for the whole session (started once: about 7 s)."""
    try:
        import pulsar  # noqa: F401
    except ImportError:
        unavailable("pulsar", "the pulsar-client package is missing (pip install 'minionize[pulsar]')")
    jars = classpath()
    root = Path(tempfile.mkdtemp(prefix="mzpulsar-"))
    broker = PulsarBroker(jars, root)
    try:
        try:
            broker.start()
        except RuntimeError as exc:
            unavailable("pulsar", str(exc))
        print(f"\nPulsar {PULSAR_VERSION} standalone ready in {broker.startup_seconds:.1f}s")
        yield broker
    finally:
        broker.kill()  # its data are thrown away: no need for the 7 s of a clean stop
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pulsar_broker(pulsar_server: PulsarBroker) -> str:
    """The service URL of a running broker (``pulsar://127.0.0.1:PORT``)."""
    return pulsar_server.url
