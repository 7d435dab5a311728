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
TS_CLIENT := clients/typescript

.PHONY: run test lint types pytest tstest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet -e './clients/python[starlette]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/billhook serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: lint types pytest tstest

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(VENV)/.installed-test
	$(BIN)/mypy $(PACKAGES) bench clients/python/src

# The console's browser tests drive Debian's Chromium (Playwright cannot download browsers).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

pytest: $(VENV)/.installed-test $(CHROMIUM)
	$(BIN)/pytest

# The TypeScript client's tools, from its lockfile only (again when it or package.json changes);
# its tests start billhook from .venv.
$(TS_CLIENT)/node_modules/.installed: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT)
	touch $@

tstest: $(TS_CLIENT)/node_modules/.installed $(VENV)/.installed-test
	npm test --prefix $(TS_CLIENT)

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build dist
	rm -rf $(TS_CLIENT)/node_modules $(TS_CLIENT)/dist
