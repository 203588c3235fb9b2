# carehook: `make run` starts the gateway, `make test` runs the whole suite (fresh machine: Python 3.11, make, git).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint unit bench-ingest bench-worker bench-transcripts clean help bench bench-quick bench-tools scale-demo

help:
	@echo "make run    - create .venv, install, start the gateway on 127.0.0.1:8000 (SQLite in ./.carehook/)"
	@echo "make test   - install the dev extras, lint, and run the whole test suite"
	@echo "make lint   - ruff, mypy --strict, import-linter"
	@echo "make bench-ingest - ingest benchmark against a bare endpoint (needs wrk: apt-get install wrk)"
	@echo "make bench-worker - worker events/s (SQLite, PostgreSQL 1 and 2 processes), receive-to-done latency"
	@echo "make bench  - every benchmark (ingest side by side, worker, transcripts); installs wrk/redis if missing"
	@echo "make bench-quick - the ingest benchmark's reduced form (< 3 minutes)"
	@echo "make scale-demo - PostgreSQL, nginx, 2 serve --no-worker, 2 workers on loopback; a load"
	@echo "make bench-transcripts - WebVTT parse time/memory and the Healthie transcript fetch over loopback"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/carehook serve

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(VENV)/.dev-installed lint
	$(BIN)/pytest

unit: $(VENV)/.dev-installed
	$(BIN)/pytest tests/unit -q

bench-ingest: $(VENV)/.dev-installed bench-tools
	$(BIN)/python bench/ingest.py

bench-worker: $(VENV)/.dev-installed
	$(BIN)/python bench/worker.py

# the benchmarks are not tests: .ci/run never runs them
APT_GET = apt-get install -y -qq $(1) || (apt-get update -qq && apt-get install -y -qq $(1))
bench-tools:
	@command -v wrk >/dev/null || { $(call APT_GET,wrk); }
	@command -v redis-server >/dev/null || { $(call APT_GET,redis-server); }
	@command -v nginx >/dev/null || { $(call APT_GET,nginx-light); }

bench: $(VENV)/.dev-installed bench-tools
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/transcripts.py

bench-quick: $(VENV)/.dev-installed bench-tools
	$(BIN)/python bench/ingest.py --quick

scale-demo: $(VENV)/.dev-installed bench-tools
	$(BIN)/python deploy/scale_demo.py
bench-transcripts: $(VENV)/.dev-installed
	$(BIN)/python bench/transcripts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
