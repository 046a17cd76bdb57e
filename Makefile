# medflow entry points. `make run` and `make test` set themselves up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medflow-installed
# python3.10 from PATH, else pyenv's install (the pyenv shim refuses when 3.10 is not the selected version).
PYTHON310 ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 /usr/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
WORKDIR ?= .medflow
PYTEST_ARGS ?=

.PHONY: setup run test test-all check lint format lock bench clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found (install it, e.g. 'pyenv install 3.10'), or pass PYTHON310=/path/to/python3.10"; exit 1; }
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$$(sed -n 's/^uv==//p' requirements.lock)"
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip sync --python $(PY) --compile-bytecode requirements.lock
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	@touch $(STAMP)

run: setup
	$(VENV)/bin/medflow demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check: lint test

lock:
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip compile requirements.in --python $(PYTHON310) -o requirements.lock

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(WORKDIR) .pytest_cache .ruff_cache test-artifacts
