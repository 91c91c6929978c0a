# Traversion: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The suite runs on the local PostgreSQL and Redis unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test lint format bench clean venv venv-dev

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements.txt requirements-dev.txt $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed
venv-dev: $(BIN)/.installed-dev

run: venv
	$(BIN)/python -m traversion_site.run

test: venv-dev
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	SECRET_KEY=$${SECRET_KEY:-test-only-secret-key-for-the-suite-0123456789} \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (bench/, figures in docs/BENCHMARKS.md): `make bench` runs every scenario;
# `make bench BENCH_ARGS="metrics_overhead --rounds 9"` runs one; `python -m bench list`.
BENCH_ARGS ?= all

bench: venv
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache
