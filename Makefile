# Quick start: `make serve` runs the demo server; `make test` sets up and passes the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install

.PHONY: serve test lint typecheck pytest setup node clean bench bench-quick

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

setup: $(STAMP)

tests/node/node_modules/.package-lock.json: tests/node/package.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js (apt-get install nodejs npm)"; exit 1; }
	cd tests/node && npm install --no-audit --no-fund --loglevel=error
	touch $@

node: tests/node/node_modules/.package-lock.json

serve: $(STAMP)
	$(VENV)/bin/wsfinally serve $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) node
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Side-by-side benchmarks (benchmarks/harness.py): full run < 15 min, quick smoke < 2 min.
bench: $(STAMP)
	$(PY) benchmarks/harness.py

bench-quick: $(STAMP)
	$(PY) benchmarks/harness.py --quick

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
