"""Shared test helpers: compose the project's real conf/ with overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from labline.core.config import compose_config
from labline.runs.runtime import MAX_THREADS_ENV

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

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


@pytest.fixture(autouse=True)
def isolated_store(tmp_path_factory, monkeypatch) -> Path:
    """Every test tracks into its own MLflow store, never the project's mlflow.db."""
    store = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("LABLINE_PROJECT_ROOT", str(store))
    _strip_mlflow_environment(monkeypatch)
    return store
