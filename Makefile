# Every target sets up .venv on first use, so each one works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CONFIG ?= configs/default.yaml
# Test processes (pytest-xdist): one per core, at most four; each test file stays in one.
TEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadfile
JUPYTER_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install fit test test-fast lint format bench notebook clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(INSTALLED) ## Create .venv and install the project with its dev tools

fit: $(INSTALLED) ## Train the default model on the embedded digits (CONFIG=... for another)
	$(PY) -m project fit --config $(CONFIG)

test: $(INSTALLED) ## Run the whole test suite, offline
	$(PY) -m pytest $(TEST_WORKERS)

test-fast: $(INSTALLED) ## Run the tests that do not train (a test that calls Trainer.fit must be marked slow)
	$(PY) -m pytest $(TEST_WORKERS) -m "not slow"

lint: $(INSTALLED) ## ruff check, ruff format --check, notebooks without outputs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb

notebook: $(VENV)/.notebook ## Start Jupyter Lab on the project's environment (JUPYTER_ARGS=...)
	$(VENV)/bin/jupyter lab notebooks/ $(JUPYTER_ARGS)

$(VENV)/.notebook: $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,notebook]"
	touch $@

bench: $(INSTALLED) ## Speed against plain PyTorch: one table of ratios (run on a quiet machine)
	$(PY) -m benchmarks

format: $(INSTALLED) ## Apply ruff's fixes and formatting; strip notebook outputs
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean: ## Remove logs, generated data and caches (keeps .venv)
	rm -rf logs data .pytest_cache .ruff_cache
