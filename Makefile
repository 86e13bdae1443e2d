# token-vault: `make run` runs it on the embedded SQLite default, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/token-vault serve --dev

test: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest

bench: install
	$(BIN)/python -m benchmarks.run --growth

bench-smoke: install
	$(BIN)/python -m benchmarks.run --smoke --output /tmp/token-vault-bench-smoke.md

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
