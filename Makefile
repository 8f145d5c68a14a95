# IoTFlow — developer commands. `make run` and `make test` are the two quick-start commands.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test check lint typecheck bench bench-quick clean

# Set-up output goes to stderr, so that `make bench` prints nothing but its JSON on stdout.
$(BIN)/python:
	@echo "creating $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing IoTFlow into $(VENV)" >&2
	@$(BIN)/pip install --quiet -e . >&2
	@touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	@echo "installing IoTFlow with the dev extras into $(VENV)" >&2
	@$(BIN)/pip install --quiet -e ".[dev,postgres,redis]" >&2
	@touch $@ $(STAMP)

## make run: install into .venv and serve on the embedded default (SQLite, in-process cache,
## embedded MQTT broker). When another broker already holds 1883 and IOTFLOW_MQTT_PORT is not set,
## the embedded broker takes 1884 instead (`iotflow serve` itself stops with a clear message).
run: $(STAMP)
	@if [ -z "$$IOTFLOW_MQTT_PORT" ] && [ -z "$$IOTFLOW_MQTT_BROKER_URL" ] && (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then \
		echo "make run: port 1883 is taken (another MQTT broker?): the embedded broker listens on 1884 (set IOTFLOW_MQTT_PORT to choose)"; \
		export IOTFLOW_MQTT_PORT=1884; \
	fi; \
	exec $(BIN)/iotflow serve

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
	@$(BIN)/python -m benchmarks.run

bench-quick: $(DEVSTAMP)
	@$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
