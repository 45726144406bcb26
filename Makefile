# Two commands: `make demo` (the main job) and `make test` (lint + the whole suite).
# Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-full docs lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# Three coins at different p, where the estimators differ (at one fair coin DisARM is exact).
demo: $(STAMP)
	$(BIN)/jaxgrad study bernoulli-toy --p 0.1,0.3,0.6 --num-keys 200000 --out results/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup jaxgrad tests

# The same suite with the `slow` statistical checks at full size and the default XLA optimization.
test-full: $(STAMP)
	JAXGRAD_FULL_TESTS=1 JAXGRAD_TEST_XLA_OPT_LEVEL=2 $(BIN)/python -m pytest -n 2 --dist loadgroup jaxgrad tests

# The documentation site, in strict mode (every warning an error): the guide's tables from
# full-size studies, the notebooks executed at full size, the API reference from the docstrings.
# Open docs/_build/html/index.html. `JAXGRAD_NOTEBOOK_QUICK=1 make docs` runs the notebooks small.
docs: $(STAMP)
	$(BIN)/python docs/_scripts/guide_tables.py --out docs/_generated/guide_tables.md
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) results .pytest_cache docs/_build docs/_generated
