# `make demo` and `make test` set up a virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench diagrams

$(BIN)/statesaga: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/statesaga
	$(BIN)/statesaga demo

test: $(BIN)/statesaga
	$(BIN)/python -m pytest

lint: $(BIN)/statesaga
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

diagrams: $(BIN)/statesaga
	$(BIN)/statesaga diagrams

bench: $(BIN)/statesaga
	$(BIN)/python benchmarks/throughput.py
