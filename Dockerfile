# The minionize image: minionize with its extras as the ENTRYPOINT, run by a non-root
# user. Build a program's image on top of it (docs/docker.md):
#
#   docker build -t minionize .
#   docker build -t minionize:redis --build-arg EXTRAS=redis .     # a smaller image
#
# Configure it with MINION_* variables (docker run -e, a Kubernetes env: list, or a .env
# file in the working directory, /home/minion).

ARG PYTHON_VERSION=3.11

# -- build the wheel (nothing of the source tree reaches the final image) ---------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY minionize ./minionize
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- the image ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
# Extras to install: all, or a comma-separated choice of redis, pubsub, pulsar, docker,
# mtop; empty for the sweep and file engines only.
ARG EXTRAS=all
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN set -eu; \
    wheel="$(echo /wheels/minionize-*.whl)"; \
    if [ -n "${EXTRAS}" ]; then wheel="${wheel}[${EXTRAS}]"; fi; \
    pip install "${wheel}"; \
    rm -rf /wheels; \
    groupadd --gid 1000 minion; \
    useradd --uid 1000 --gid minion --create-home --shell /usr/sbin/nologin minion; \
    minionize --version
USER minion:minion
WORKDIR /home/minion
# minionize stops its tasks on SIGTERM (what `docker stop` and Kubernetes send), requeues
# them and exits 0. Give it MINION_GRACE_PERIOD plus a margin (docker stop -t,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["minionize"]
CMD ["--help"]
