"""Shared test helpers: compose the project's real conf/ with overrides, in a project root without DVC outputs."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

# rich wraps at $COLUMNS: messages must not depend on the terminal the tests run in (set before labline's console).
os.environ["COLUMNS"] = "200"

import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from labline.core.config import compose_config  # noqa: E402
from labline.runs.runtime import MAX_THREADS_ENV  # noqa: E402
from testroot import CONF, ROOT  # noqa: E402,F401  (ROOT: created before any test runs)

# Under pytest-xdist the cores are shared out between the workers: every training in a worker, in-process
# or in a CLI subprocess (which inherits the environment), uses at most its share of torch threads.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault(MAX_THREADS_ENV, str(max(1, share)))


@pytest.fixture
def compose():
    """``compose("backbone=mlp", ...)`` -> the composed DictConfig of conf/train.yaml."""

    def _compose(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), conf=CONF)

    return _compose


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides that make a real training run take seconds."""
    return ["trainer.max_epochs=2", "threads=1", "logger.experiment_name=tests"]


def _strip_mlflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLFLOW_* variable from the caller's shell (or left by an earlier test's fluent MLflow call) reaches a test."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)


@pytest.fixture(autouse=True, scope="module")
def clean_module_environment():
    """Module fixtures (a teacher trained once per module) start before the per-test store: strip here too."""
    with pytest.MonkeyPatch.context() as patch:
        _strip_mlflow_environment(patch)
        yield


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and nothing logged, made once per test process. Creating a store runs
    MLflow's alembic migrations (3.0 s measured on this stack), opening a copy of one 0.06 s, and every test below
    has a store of its own: each starts as a copy. The CLI tests' project copies still start without any store."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def isolated_store(tmp_path_factory, monkeypatch, empty_store: Path) -> Path:
    """Every test tracks into its own MLflow store, never the project's mlflow.db."""
    store = tmp_path_factory.mktemp("store")
    shutil.copyfile(empty_store, store / "mlflow.db")
    with sqlite3.connect(store / "mlflow.db") as db:  # MLflow's Default experiment, as a store made here would have it
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(store / "mlruns" / "0"),))
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(store))
    monkeypatch.setenv("LABLINE_CONFIG_DIR", str(CONF))  # conf/ is the checkout's, whatever the working directory
    _strip_mlflow_environment(monkeypatch)
    return store
