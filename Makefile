# Two commands for a new user: `make demo` and `make test`.
# Needs only python3.11 (with venv), make and apt-get (for DCMTK) on the machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install dcmtk bench clean help

help:
	@echo "make demo   - start simulator, MWL service and Dagster; run a first sync"
	@echo "make test   - run the whole test suite (installs DCMTK if it can)"
	@echo "make bench  - run the sync and MWL benchmarks"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "error: venv failed; on Debian: apt-get install python3-venv"; exit 1; }

# Reinstall when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres]"
	@touch $@

install: $(STAMP)

# Real DICOM clients are part of the tests: install DCMTK when missing, or stop loudly.
dcmtk:
	@if ! command -v findscu >/dev/null || ! command -v wlmscpfs >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; \
	  else echo "error: DCMTK (findscu, wlmscpfs) is missing; install the Debian package 'dcmtk'"; exit 1; fi; \
	fi
	@command -v findscu >/dev/null || { echo "error: findscu still missing after installing dcmtk"; exit 1; }

test: install dcmtk
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python deploy/demo.py

bench: install dcmtk
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/mwl_bench.py

clean:
	rm -rf var .pytest_cache
