# IoTFlow — developer commands. `make run` and `make test` are the two quick-start commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test check lint typecheck bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,postgres,redis]"
	@touch $@ $(STAMP)

## make run: install into .venv and serve on the embedded default (SQLite, in-process cache)
run: $(STAMP)
	$(BIN)/iotflow serve

## make test: install with dev extras and run the whole test suite
test: $(DEVSTAMP)
	$(BIN)/python -m pytest

## make check: ruff (lint + format check) and mypy --strict on src
check: $(DEVSTAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

## make bench: ingest benchmarks, printed as JSON
bench: $(DEVSTAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(DEVSTAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
