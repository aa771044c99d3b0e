# syntax=docker/dockerfile:1
# GMAI-VL images, one build target each (docs/deployment.md):
#
#   docker build --target gateway    -t gmai-vl-gateway .     # no torch: `gmai-vl gateway`
#   docker build --target worker-cpu -t gmai-vl-worker-cpu .  # torch CPU + transformers engine
#   docker build --target worker     -t gmai-vl-worker .      # CUDA + vLLM engine (GPU nodes)
#
# Nothing secret and no model weights are baked in: the checkpoint is a volume
# (GMAIVL_MODEL), API keys and PACS credentials are mounted files at run time.
# Every image runs as the unprivileged user 10001 with a read-only-friendly
# layout: the only writable path it needs is the cache (XDG_CACHE_HOME).
#
# Build arguments for machines without a registry or with their own mirrors
# (`make images` sets them; docs/deployment.md, "Podman"):
#   PYTHON_IMAGE / CUDA_IMAGE  the bases (an internal mirror, or a local Debian base)
#   TORCH_INDEX_URL            where torch's CPU wheel comes from (default: PyTorch's CPU index)
#   TORCH_FIND_LINKS           a directory of wheels mounted into the build
#                              (`podman build -v /opt/wheels:/opt/wheels:ro`); when set,
#                              torch comes from there and nowhere else
# A CA bundle for a TLS-intercepting proxy is a build secret, never a layer:
#   --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-base-ubuntu24.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=""
ARG GMAIVL_VERSION=0.1.0

# ---- the project's metadata alone as a wheel: installs the dependencies in a layer
# of their own, so a source change does not reinstall torch and friends ----
FROM ${PYTHON_IMAGE} AS meta
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && mkdir service training && touch README.md service/__init__.py training/__init__.py \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /meta .

# ---- the project as a wheel (the only stage that sees the source tree) ----
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY training training
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- gateway: the base install in a virtual environment ----
FROM ${PYTHON_IMAGE} AS gateway-venv
COPY --from=meta /meta /meta
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && python -m venv /opt/gmai-vl \
    && /opt/gmai-vl/bin/pip install --no-cache-dir /meta/*.whl
COPY --from=wheel /wheels /wheels
# pynetdicom's wheel carries its test suite, TLS private keys included (public test
# keys, but no image of ours holds a *.key): dropped before the venv is copied on.
RUN /opt/gmai-vl/bin/pip install --no-cache-dir --no-deps --force-reinstall /wheels/*.whl \
    && rm -rf /opt/gmai-vl/lib/python3*/site-packages/pynetdicom/tests

FROM ${PYTHON_IMAGE} AS gateway
ARG GMAIVL_VERSION
LABEL org.opencontainers.image.title="gmai-vl-gateway" \
      org.opencontainers.image.description="GMAI-VL: the HTTP gateway" \
      org.opencontainers.image.version="${GMAIVL_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/gmai-vl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMAIVL_HOST=0.0.0.0 \
    GMAIVL_PORT=8000 \
    XDG_CACHE_HOME=/var/cache/gmai-vl
RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin gmaivl \
    && install -d -o 10001 -g 0 -m 0770 /var/cache/gmai-vl
USER 10001
EXPOSE 8000
# Liveness only: readiness needs a worker, which is the orchestrator's business.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('GMAIVL_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["gmai-vl"]
CMD ["gateway"]
# The virtual environment last (on copy-per-layer storage, vfs, every later
# instruction would copy it again). Owned by root: the runtime user cannot change it.
COPY --from=gateway-venv /opt/gmai-vl /opt/gmai-vl

# ---- CPU worker: torch's CPU build, the transformers engine ----
# `[train]` too: the worker builds the demo model (scipy, matplotlib) when given no --model.
# torch is the CPU build either way, and the build fails otherwise.
FROM ${PYTHON_IMAGE} AS worker-cpu-venv
ARG TORCH_INDEX_URL
ARG TORCH_FIND_LINKS
COPY --from=meta /meta /meta
# $torch_from is two words on purpose.
# hadolint ignore=SC2086
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && python -m venv /opt/gmai-vl \
    && if [ -n "$TORCH_FIND_LINKS" ]; then torch_from="--find-links $TORCH_FIND_LINKS"; \
       else torch_from="--index-url $TORCH_INDEX_URL"; fi \
    && /opt/gmai-vl/bin/pip install --no-cache-dir $torch_from "torch==2.13.0+cpu" \
    && /opt/gmai-vl/bin/pip install --no-cache-dir "$(ls /meta/*.whl)[worker,train]" \
    && /opt/gmai-vl/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"
COPY --from=wheel /wheels /wheels
RUN /opt/gmai-vl/bin/pip install --no-cache-dir --no-deps --force-reinstall /wheels/*.whl \
    && rm -rf /opt/gmai-vl/lib/python3*/site-packages/pynetdicom/tests

FROM ${PYTHON_IMAGE} AS worker-cpu
ARG GMAIVL_VERSION
LABEL org.opencontainers.image.title="gmai-vl-worker-cpu" \
      org.opencontainers.image.description="GMAI-VL: a CPU worker (torch CPU, transformers engine)" \
      org.opencontainers.image.version="${GMAIVL_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/gmai-vl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMAIVL_HOST=0.0.0.0 \
    GMAIVL_METRICS_PORT=9090 \
    GMAIVL_ENGINE=transformers \
    XDG_CACHE_HOME=/var/cache/gmai-vl
RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin gmaivl \
    && install -d -o 10001 -g 0 -m 0770 /var/cache/gmai-vl
USER 10001
EXPOSE 9090
# Ready = engine warmed up, taking jobs, queue reachable (service/worker_http.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('GMAIVL_METRICS_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["gmai-vl"]
CMD ["worker"]
# The virtual environment last (on copy-per-layer storage, vfs, every later
# instruction would copy it again). Owned by root: the runtime user cannot change it.
COPY --from=worker-cpu-venv /opt/gmai-vl /opt/gmai-vl

# ---- GPU worker: CUDA base, vLLM from PyPI (its wheels bring the CUDA libraries) ----
FROM ${CUDA_IMAGE} AS worker
ARG GMAIVL_VERSION
LABEL org.opencontainers.image.title="gmai-vl-worker" \
      org.opencontainers.image.description="GMAI-VL: a GPU worker (CUDA, vLLM engine)" \
      org.opencontainers.image.version="${GMAIVL_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Triton (inside vLLM) compiles small launchers with gcc at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
    && rm -rf /var/lib/apt/lists/*
# The wheel is bind-mounted for this step only: it leaves no layer behind.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem; fi \
    && python3 -m venv /opt/gmai-vl \
    && /opt/gmai-vl/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[vllm]" \
    && rm -rf /opt/gmai-vl/lib/python3*/site-packages/pynetdicom/tests
ENV PATH=/opt/gmai-vl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMAIVL_HOST=0.0.0.0 \
    GMAIVL_METRICS_PORT=9090 \
    GMAIVL_ENGINE=vllm \
    XDG_CACHE_HOME=/var/cache/gmai-vl \
    HF_HUB_OFFLINE=1
RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin gmaivl \
    && install -d -o 10001 -g 0 -m 0770 /var/cache/gmai-vl
USER 10001
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('GMAIVL_METRICS_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["gmai-vl"]
CMD ["worker"]
