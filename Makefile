# medflow entry points. `make run` and `make test` set themselves up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Two stacks (README "Stacks"): next = Python 3.13/3.12 + TFX 1.21 (requirements-next.lock) where
# glibc >= 2.39 allows it, else default = Python 3.10 + TFX 1.16 (requirements.lock).
# `make setup` picks (scripts/next-stack/pick-stack); STACK=next or STACK=default forces one.
STACK ?= auto
PICKED := $(shell PYTHON310='$(PYTHON310)' NEXT_PYTHON='$(NEXT_PYTHON)' scripts/next-stack/pick-stack $(STACK))
STACK_NAME := $(word 1,$(PICKED))
STACK_PYTHON := $(word 2,$(PICKED))
LOCK := $(if $(filter next,$(STACK_NAME)),requirements-next.lock,requirements.lock)
STAMP := $(VENV)/.medflow-installed$(if $(filter next,$(STACK_NAME)),-next)
WORKDIR ?= .medflow
PYTEST_ARGS ?=

.PHONY: setup run test test-all check lint format lock bench clean test-next-stack

setup: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@case "$(STACK_NAME)" in next|default) echo "medflow setup: $(STACK_NAME) stack, $(STACK_PYTHON), $(LOCK)";; *) echo "$(PICKED)"; exit 1;; esac
	@# A venv of the other stack's Python is replaced, not mixed.
	@if test -x $(PY) && [ "$$($(PY) -c 'import sys; print(sys.version_info[:2])')" != "$$($(STACK_PYTHON) -c 'import sys; print(sys.version_info[:2])')" ]; then \
		echo "medflow setup: replacing $(VENV) (another Python)"; rm -rf $(VENV); fi
	@test -x $(PY) || $(STACK_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$$(sed -n 's/^uv==//p' $(LOCK))"
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip sync --python $(PY) --compile-bytecode $(LOCK)
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
	@py=$$(PYTHON310='$(PYTHON310)' scripts/next-stack/pick-stack default); [ "$${py%% *}" = default ] || { echo "$$py"; exit 1; }; \
	set -x; UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip compile requirements.in --python $${py#default } -o requirements.lock
	@# One lock for Python 3.12 and 3.13 (apache-beam pins google-apitools differently on each),
	@# markers pick; installable where glibc >= 2.39 (TFDV/ml-metadata are manylinux_2_39 wheels).
	UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip compile requirements.in requirements-next.in --override requirements-next.in \
		--universal --python-version 3.12 -o requirements-next.lock

# The next stack verified on any Linux with debootstrap (as root): a cached Debian 13 root runs
# `make setup`, `make test` and `make run` (scripts/next-stack/inside.sh) on a clean clone of HEAD.
test-next-stack:
	scripts/next-stack/build-root.sh

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(WORKDIR) .pytest_cache .ruff_cache test-artifacts
