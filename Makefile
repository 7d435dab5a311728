# billhook — `make run` serves, `make test` checks everything, `make bench` measures.
# `make run` serves the DEVELOPMENT config examples/dev.toml (published tokens and secrets,
# refused in live mode): `make run CONFIG=billhook.toml HOST=0.0.0.0 PORT=9000` for your own.
# Each target bootstraps .venv from pyproject.toml on first use (and again when it changes):
# `make run` installs only what serving needs, `make test` and `make bench` the test extra too.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := src/billhook
HOST ?= 127.0.0.1
PORT ?= 8000
CONFIG ?= examples/dev.toml

.PHONY: run test lint types pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/billhook serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: lint types pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(VENV)/.installed-test
	$(BIN)/mypy $(PACKAGES) bench

pytest: $(VENV)/.installed-test
	$(BIN)/pytest

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build dist
