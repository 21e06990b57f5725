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

.PHONY: run test results ui install params lint bench clean-results browser screenshots lab-install lab-up lab-down

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
test: $(STAMP) browser lab-install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=15

## Re-measure labline's own published results (pipelines/results: one DVC stage per table row, fixed seeds),
## then render the README/docs tables from the metrics files. Long on 2 cores: one row is
## `dvc repro pipelines/results/dvc.yaml:row@NAME`.
results: $(STAMP)
	@test -d .dvc || $(BIN)/dvc init --quiet
	$(BIN)/dvc repro pipelines/results/dvc.yaml
	$(BIN)/labline docs

## Headless Chromium for the dashboard tests (Debian packages; installed only when root and missing: CI runs as root).
browser:
	@if [ ! -x /usr/bin/chromedriver ] && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi

## Regenerate the screenshots in docs/images/ with the dashboard tests' own code.
screenshots: $(STAMP) browser
	LABLINE_SCREENSHOTS=$(CURDIR)/docs/images $(BIN)/python -m pytest -q -n 0 tests/e2e/test_dashboards.py

## The system services of the cluster tests and `make lab-up` (docs/cluster.md): PostgreSQL, SLURM and munge
## from Debian, installed when running as root and missing (CI runs as root). Without root nothing is installed
## and the cluster tests skip, naming this target (under CI=true a skip fails the run).
LAB_PROGRAMS := /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch
lab-install:
	@if [ "$$(id -u)" != 0 ]; then echo "lab-install: not root, PostgreSQL/SLURM not installed (cluster tests will skip)"; \
	elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && (for p in $(LAB_PROGRAMS); do test -x $$p || exit 1; done); then :; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  postgresql slurm-wlm munge >/dev/null && echo "lab-install: installed postgresql slurm-wlm munge"; fi

## The lab stack on 127.0.0.1 (PostgreSQL, MLflow server, SLURM, S3); prints the variables to export.
lab-up: $(STAMP) lab-install
	$(BIN)/labline lab up

lab-down: $(STAMP)
	$(BIN)/labline lab down

## MLflow UI over the project's store, bound to loopback. MLflow 3.17 opens experiments in its GenAI view:
## the printed link (or the sidebar's "Model training" switch, which the UI remembers) opens the runs.
ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

params: $(STAMP)
	$(BIN)/labline params

lint: $(STAMP)
	$(BIN)/ruff check src tests benches

bench: $(STAMP)
	$(BIN)/python benches/overhead.py
