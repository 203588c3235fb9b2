# carehook: `make run` starts the gateway, `make test` runs the whole suite (fresh machine: Python 3.11, make, git).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint unit bench-ingest bench-worker bench-transcripts clean help

help:
	@echo "make run    - create .venv, install, start the gateway on 127.0.0.1:8000 (SQLite in ./.carehook/)"
	@echo "make test   - install the dev extras, lint, and run the whole test suite"
	@echo "make lint   - ruff, mypy --strict, import-linter"
	@echo "make bench-ingest - ingest benchmark against a bare endpoint (needs wrk: apt-get install wrk)"
	@echo "make bench-worker - worker events/s (SQLite, PostgreSQL 1 and 2 processes), receive-to-done latency"
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
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(VENV)/.dev-installed lint
	$(BIN)/pytest

unit: $(VENV)/.dev-installed
	$(BIN)/pytest tests/unit -q

bench-ingest: $(VENV)/.dev-installed
	$(BIN)/python bench/ingest.py

bench-worker: $(VENV)/.dev-installed
	$(BIN)/python bench/worker.py

bench-transcripts: $(VENV)/.dev-installed
	$(BIN)/python bench/transcripts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
