# Two commands: `make demo` (the main job) and `make test` (lint + the whole suite).
# Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-full lint bench clean

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

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) results .pytest_cache
