#!/usr/bin/env bash
# Install everything the tests need, then run ruff, mypy and the whole test suite.
#   bash tests/run.sh            # all tests
#   bash tests/run.sh -k redis   # extra arguments go to pytest
# As root on Debian/Ubuntu it installs the services the integration tests start
# (Redis, Docker engine, SLURM, munge, Grid Engine, tmux, GNU parallel), Java and Maven (the Pulsar
# tests resolve Apache Pulsar's broker from Maven Central into ~/.m2) and debootstrap
# (the image tests make their Debian base image, kept in ~/.cache/minionize-tests), and
# containerd, etcd and Go-built binaries for a one-node Kubernetes (tests/services/kubernetes.py).
# Elsewhere those tests skip with their reason, except under CI=true, where a skipped
# service test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(redis-server docker.io busybox-static slurmctld slurmd slurm-client munge tmux parallel jq
              openjdk-17-jre-headless maven debootstrap
              libpython3.11-testsuite  # CPython's concurrent.futures tests (tests/integration/test_executor_cpython.py)
              # Son of Grid Engine 8.1.9 (tests/services/sge.py: sge_qmaster, sge_execd, qsub...)
              gridengine-master gridengine-exec gridengine-client
              # OAR 2.5.9 (tests/services/oar.py: PostgreSQL, the node's sshd, Almighty...)
              oar-server oar-node oar-user oar-server-pgsql oar-user-pgsql postgresql openssh-server
              # a single-node Kubernetes (tests/services/kubernetes.py builds its binaries with Go;
              # gcc and umoci make the pause image)
              containerd runc etcd-server containernetworking-plugins conntrack socat umoci gcc libc6-dev)

install_system_packages() {
    command -v dpkg-query >/dev/null 2>&1 || { echo "tests/run.sh: not a Debian system: service tests may skip"; return 0; }
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
            echo "tests/run.sh: not root: cannot install ${missing[*]}; their tests may skip"
            return 0
        fi
    fi
    echo "tests/run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null \
        || { "${sudo[@]}" apt-get update -q </dev/null && \
             "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null; }
}

install_system_packages
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]' </dev/null

echo "== ruff"
"$PYTHON" -m ruff check minionize tests bench
echo "== mypy"
"$PYTHON" -m mypy
echo "== kubernetes"
# Built from source with Go once (8 to 10 minutes on 2 cores, kept in ~/.cache/minionize-tests),
# as root only (the cluster needs root); the log goes to a file, one line here. Without
# it the Kubernetes tests skip (fail under CI=true).
if [ "$(id -u)" -eq 0 ]; then "$PYTHON" -m tests.services.kubernetes build </dev/null || true; fi
echo "== pytest"
"$PYTHON" -m pytest -q -ra "$@"
