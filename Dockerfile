# One image for every sessiond process: the entrypoint is `sessiond`, the command names the
# process (`docker run IMAGE worker`, `... gateway`, `... migrate`; see Procfile, compose.yaml and
# infra/k8s/). Build: `docker build -t sessiond .` (BuildKit: Docker 23 or later).
#
# The dependencies are the ones uv.lock pins (`--frozen`: never re-resolved here) without the dev
# group and extra: no embedded servers, no Procfile runner, no test tools in the image.
# tests/unit/test_container.py checks this file statically (`make test`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a venv in /opt/sessiond
FROM ${PYTHON_IMAGE} AS build

# the uv release that uv.lock pins for the dev group (a test keeps the two equal)
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.8

ENV UV_PROJECT_ENVIRONMENT=/opt/sessiond \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src

# third-party dependencies first: this layer is rebuilt only when uv.lock changes
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# then sessiond itself, installed as a wheel (not editable: /src stays behind in this stage)
COPY README.md ./
COPY actors ./actors
COPY events ./events
COPY projections ./projections
COPY gateway ./gateway
COPY infra ./infra
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------- runtime: the venv, a user
FROM ${PYTHON_IMAGE} AS runtime

# a fixed numeric uid/gid: Kubernetes' runAsNonRoot can verify it, the manifests name it
RUN groupadd --system --gid 10001 sessiond \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin sessiond

COPY --from=build /opt/sessiond /opt/sessiond

# production unless the deployment says otherwise: development secrets are refused and the
# projector leaves migrations to `sessiond migrate`
ENV PATH=/opt/sessiond/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SESSIOND_ENV=prod

# nothing is written here: the root filesystem may be read-only (temporary files go to /tmp)
WORKDIR /opt/sessiond

USER 10001:10001

# 8080: the gateway (SERVER_ADDR); 9100: /healthz and /metrics (SESSIOND_METRICS_ADDR)
EXPOSE 8080 9100

ENTRYPOINT ["sessiond"]
CMD ["--help"]
