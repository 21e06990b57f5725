# labline: two commands on a fresh machine — `make run` and `make test`.
# Each creates .venv with Python 3.11 and installs the pinned dependencies on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
# Keep pip's progress quiet in CI logs; matplotlib needs a writable cache.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MPLBACKEND := Agg

.PHONY: run test ui install params lint bench clean-results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,text]'
	$(BIN)/labline plots-html
	touch $(STAMP)

install: $(STAMP)

## Run the default experiment end to end: DVC pipeline on the bundled digits.
run: $(STAMP)
	@test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/labline params
	$(BIN)/dvc repro
	$(BIN)/labline metrics reports/metrics.json

## The whole test suite (.ci/run calls exactly this): the layer rules (import-linter contracts in
## pyproject.toml), then pytest. One pytest-xdist worker per core (at most 4), each test file on one
## worker (module fixtures are built once); tests/conftest.py gives each worker's trainings its share of
## the cores as torch threads.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=15

## MLflow UI over the project's store, bound to loopback.
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

params: $(STAMP)
	$(BIN)/labline params

lint: $(STAMP)
	$(BIN)/ruff check src tests benches

bench: $(STAMP)
	$(BIN)/python benches/overhead.py
