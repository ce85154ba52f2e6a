# The minionize image: minionize with its extras as the ENTRYPOINT, run by a non-root
# user. Build a program's image on top of it (docs/docker.md):
#
#   docker build -t minionize .
#   docker build -t minionize:redis --build-arg EXTRAS=redis .     # a smaller image
#
# Configure it with MINION_* variables (docker run -e, a Kubernetes env: list, or a .env
# file in the working directory, /home/minion).
#
# BASE is any Debian-like image with python3 (3.9 or newer) and its venv module.
# Without a network (or a registry): put the wheels pip needs in ./wheels and pass
# --build-arg OFFLINE=1 (docs/docker.md shows both).

ARG BASE=python:3.11-slim

# -- build: a virtual environment holding minionize and its extras --------------------
FROM ${BASE} AS build
# Extras to install: all, or a comma-separated choice of redis, pubsub, pulsar, docker,
# mtop; empty for the sweep and file engines only.
ARG EXTRAS=all
ARG OFFLINE=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# wheel[s]: the ./wheels directory if there is one (its wheels land in /src).
COPY pyproject.toml README.md wheel[s] ./
COPY minionize ./minionize
RUN set -eu; \
    spec=.; if [ -n "${EXTRAS}" ]; then spec=".[${EXTRAS}]"; fi; \
    python3 -m venv /opt/minionize; \
    /opt/minionize/bin/pip install ${OFFLINE:+--no-index} --find-links /src "${spec}"; \
    /opt/minionize/bin/minionize --version

# -- the image: the virtual environment only (no source, no wheels, no pip cache) ------
FROM ${BASE}
ENV PATH=/opt/minionize/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/minionize /opt/minionize
RUN set -eu; \
    groupadd --gid 1000 minion; \
    useradd --uid 1000 --gid minion --create-home --shell /usr/sbin/nologin minion; \
    minionize --version
# Numeric, so that Kubernetes can check runAsNonRoot (the user is minion, uid 1000).
USER 1000:1000
WORKDIR /home/minion
# minionize stops its tasks on SIGTERM (what `docker stop` and Kubernetes send), requeues
# them and exits 0. Give it MINION_GRACE_PERIOD plus a margin (docker stop -t,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["minionize"]
CMD ["--help"]
