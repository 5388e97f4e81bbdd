# Quick start: `make demo` and `make test` on a machine with Python 3.11 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PACKAGES := hil drivers protocols mock_hardware

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hil demo

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check $(PACKAGES) tests benchmarks
	$(BIN)/mypy $(PACKAGES)

bench: $(STAMP)
	$(BIN)/python benchmarks/link.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
