# token-vault: `make run` runs it on the embedded SQLite default, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@mkdir -p var
	@test -s var/dev-keys || { $(BIN)/token-vault keys generate | sed 's/^TOKEN_VAULT_KEYS=//' > var/dev-keys; \
	  chmod 600 var/dev-keys; echo "warning: generated a DEV key in var/dev-keys; never use it in production" >&2; }
	TOKEN_VAULT_KEYS_FILE=var/dev-keys TOKEN_VAULT_DATABASE_URL=sqlite:///var/token-vault.db \
	  $(BIN)/token-vault db upgrade
	TOKEN_VAULT_KEYS_FILE=var/dev-keys TOKEN_VAULT_DATABASE_URL=sqlite:///var/token-vault.db \
	  $(BIN)/token-vault demo

test: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
