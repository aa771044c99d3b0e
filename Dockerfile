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

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-base-ubuntu24.04

# ---- the project as a wheel (the only stage that sees the source tree) ----
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service service
COPY training training
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- gateway: the base install in a virtual environment ----
FROM ${PYTHON_IMAGE} AS gateway-venv
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/gmai-vl \
    && /opt/gmai-vl/bin/pip install --no-cache-dir /wheels/*.whl

FROM ${PYTHON_IMAGE} AS gateway
ENV PATH=/opt/gmai-vl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMAIVL_HOST=0.0.0.0 \
    GMAIVL_PORT=8000 \
    XDG_CACHE_HOME=/var/cache/gmai-vl
RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin gmaivl \
    && install -d -o 10001 -g 0 -m 0770 /var/cache/gmai-vl
COPY --from=gateway-venv /opt/gmai-vl /opt/gmai-vl
USER 10001
EXPOSE 8000
# Liveness only: readiness needs a worker, which is the orchestrator's business.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('GMAIVL_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["gmai-vl"]
CMD ["gateway"]

# ---- CPU worker: torch's CPU build, the transformers engine ----
FROM ${PYTHON_IMAGE} AS worker-cpu-venv
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/gmai-vl \
    && /opt/gmai-vl/bin/pip install --no-cache-dir torch==2.13.0 \
        --index-url https://download.pytorch.org/whl/cpu \
    && /opt/gmai-vl/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[worker]"

FROM ${PYTHON_IMAGE} AS worker-cpu
ENV PATH=/opt/gmai-vl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GMAIVL_HOST=0.0.0.0 \
    GMAIVL_METRICS_PORT=9090 \
    GMAIVL_ENGINE=transformers \
    XDG_CACHE_HOME=/var/cache/gmai-vl
RUN useradd --system --uid 10001 --gid 0 --no-create-home --shell /usr/sbin/nologin gmaivl \
    && install -d -o 10001 -g 0 -m 0770 /var/cache/gmai-vl
COPY --from=worker-cpu-venv /opt/gmai-vl /opt/gmai-vl
USER 10001
EXPOSE 9090
# Ready = engine warmed up, taking jobs, queue reachable (service/worker_http.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('GMAIVL_METRICS_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["gmai-vl"]
CMD ["worker"]

# ---- GPU worker: CUDA base, vLLM from PyPI (its wheels bring the CUDA libraries) ----
FROM ${CUDA_IMAGE} AS worker
# Triton (inside vLLM) compiles small launchers with gcc at run time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
    && rm -rf /var/lib/apt/lists/*
# The wheel is bind-mounted for this step only: it leaves no layer behind.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 -m venv /opt/gmai-vl \
    && /opt/gmai-vl/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[vllm]"
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
