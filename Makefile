# The two commands of the README: `make run` (the bot on the embedded default) and `make test`.
# Both create .venv/ in this folder and install everything on first use.
#   TORCH_SPEC   the torch requirement (default torch==2.13.0: here a CPU build)
#   TORCH_INDEX  a package index for torch, e.g. https://download.pytorch.org/whl/cpu (CPU-only build) or
#                https://download.pytorch.org/whl/cu128 (CUDA 12.8 build); empty: the default index
# `make test-postgres`: `make test` plus the storage tests against a throw-away PostgreSQL server on 127.0.0.1:54329
# (.ci/postgres.sh; needs PostgreSQL installed, e.g. Debian's postgresql package).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-postgres test-slow bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/proverbot run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-postgres: $(STAMP)
	pgdir=$$(mktemp -d) && trap 'bash .ci/postgres.sh stop "$$pgdir"' EXIT && \
	url=$$(bash .ci/postgres.sh start "$$pgdir") && PROVERBOT_TEST_POSTGRES_URL=$$url $(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python bench/sampling.py --random-init
	$(BIN)/python bench/training.py --random-init
	$(BIN)/python bench/worker.py --random-init
	$(BIN)/python bench/storage.py

clean:
	rm -rf $(VENV) build *.egg-info
