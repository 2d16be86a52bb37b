# syntax=docker/dockerfile:1
# Loyalty Stream worker image: `docker build -t loyalty-stream .` (or `docker compose build`).
# Runs `loyalty worker`; every setting comes from LOYALTY_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a virtualenv ----------------------
FROM ${PYTHON_IMAGE} AS build

# On amd64 every dependency ships a wheel (rocksdict, orjson, faust-streaming, aiokafka...),
# so no compiler is needed. faust-streaming has no wheel for other architectures (arm64):
# there, and only there, a compiler is installed in this throw-away stage.
ARG TARGETARCH
RUN if [ "${TARGETARCH:-amd64}" != "amd64" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends build-essential \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps tests, caches, local Kafka jars/state, ops files and .git out of here.
COPY . .
RUN pip install . && pip check

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="loyalty-stream" \
      org.opencontainers.image.description="Loyalty Stream worker (faust-streaming on Kafka)"

RUN groupadd --system --gid 10001 loyalty \
    && useradd --system --uid 10001 --gid loyalty --home-dir /app --shell /usr/sbin/nologin loyalty \
    && mkdir -p /var/lib/loyalty \
    && chown loyalty:loyalty /var/lib/loyalty \
    && chmod 0700 /var/lib/loyalty

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The package carries program/default.toml as its default; this copy outside it is the one
# an operator replaces (mount another file here, or point LOYALTY_PROGRAM elsewhere).
COPY program/ /app/program/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOYALTY_DATA_DIR=/var/lib/loyalty \
    LOYALTY_PROGRAM=/app/program/default.toml \
    LOYALTY_WEB_HOST=0.0.0.0 \
    LOYALTY_WEB_PORT=6066 \
    LOYALTY_LOG_LEVEL=info

USER loyalty
# RocksDB table state; a named volume keeps it across restarts (faster recovery than
# replaying the changelog topics). The worker keeps it 0700 and its files 0600 (umask 077).
VOLUME ["/var/lib/loyalty"]
EXPOSE 6066

# Healthy: the worker holds partitions, its tables are recovered and its catalog is read
# (GET /health/ready; /health/live only says the process answers). docs/operations.md.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('LOYALTY_WEB_PORT', '6066'), timeout=4)" || exit 1
# On SIGTERM the worker is gone within LOYALTY_SHUTDOWN_GRACE_S (8 s): a clean stop, or
# forced past it; keep the runtime's stop timeout longer (Docker's default is 10 s).

ENTRYPOINT ["loyalty"]
CMD ["worker"]
