# Two entry points that work on a fresh machine with only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxgrad demo

# The suite runs in parallel processes (pytest-xdist), each test file in one of them: one per
# core, as many as memory holds (tests/conftest.py). TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= auto
PYTEST_JOBS := -n $(TEST_JOBS) --dist loadfile

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q --durations=25 $(PYTEST_JOBS)

# For contributors, between edits: the suite without the tests marked slow (subprocesses,
# whole sweeps, the demo report, and the functions tests/slow_tests.txt lists by measured
# duration): 1559 tests in about a minute on 2 cores (2026-12-07). `make test` runs them all.
.PHONY: test-fast wheel-check
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow" $(PYTEST_JOBS)

# The package as a user gets it: its wheel in a fresh virtual environment runs the demo.
wheel-check:
	PYTHON=$(PYTHON) .ci/wheel-check

# The documentation site in docs/_build/html; warnings are errors. Notebooks are executed
# (cached between builds here; CI runs `make docs DOCS_EXECUTE=force`, every page afresh).
DOCS_EXECUTE ?= cache
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	JAXGRAD_DOCS_EXECUTE=$(DOCS_EXECUTE) $(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) jaxgrad-out .pytest_cache .ruff_cache docs/_build docs/api
