# Two commands for a new user: `make demo` and `make test`.
# Needs only python3.11 (with venv), make and apt-get (for DCMTK) on the machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install test-tools bench clean help

help:
	@echo "make demo   - start simulator, MWL service, mwl-api and Dagster; run a first sync"
	@echo "make test   - run the whole test suite (installs DCMTK and Chromium if it can)"
	@echo "make test-fast - the inner loop: every test that starts no other process, SQLite only"
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

# Real DICOM clients (DCMTK), openssl (TLS test certificates) and Debian's Chromium
# (the page's browser tests, driven by Playwright: never a downloaded browser) are
# part of the tests: install the Debian packages when missing, or stop loudly.
# /usr/bin first: pynetdicom puts its own findscu/echoscu into the venv.
TEST_TOOLS := /usr/bin/findscu /usr/bin/wlmscpfs /usr/bin/echoscu /usr/bin/openssl /usr/bin/chromium
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do [ -x $$t ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "error: install the Debian packages 'dcmtk', 'openssl' and 'chromium' (needs root)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk openssl chromium; \
	fi; \
	for t in $(TEST_TOOLS); do [ -x $$t ] || { echo "error: $$t still missing"; exit 1; }; done

test: install test-tools
	$(BIN)/python -m pytest

# The inner loop: no test that starts another process, no PostgreSQL.
test-fast: install
	env -u WORKLIST_TEST_PG_URL $(BIN)/python -m pytest -q -n 2 -m "not external"

demo: install
	$(BIN)/python deploy/demo.py

bench: install test-tools
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/mwl_bench.py

clean:
	rm -rf var .pytest_cache
