"""One training run end to end in-process: determinism, MLflow status, errors before the run."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from labline.core.errors import ConfigError
from labline.runs.assembly import prepare_run
from labline.runs.lightning_run import train_and_test
from labline.runs.runtime import MAX_THREADS_ENV, SLURM_CPUS_ENV, runtime_tags, setup_runtime
from labline.tracking.store import tracking_uri
from testroot import ROOT

FAST = ["trainer.max_epochs=2", "+trainer.limit_train_batches=4", "threads=1", "logger.experiment_name=unit"]


class Boom(pl.Callback):
    """Fails in the middle of training, as a bug or a dying disk would."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise RuntimeError("disk on fire")


def _runs() -> list:
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("unit")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_same_seed_same_metrics_on_cpu(compose, tmp_path) -> None:
    first = train_and_test(compose(*FAST, "seed=0"), tmp_path / "a", ROOT)
    second = train_and_test(compose(*FAST, "seed=0"), tmp_path / "b", ROOT)
    other = train_and_test(compose(*FAST, "seed=1"), tmp_path / "c", ROOT)
    keys = ("test/acc", "test/loss", "test/f1_macro")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["test/loss"] != other["test/loss"]
    assert first["run_id"] != second["run_id"]


def test_thread_count_is_applied(compose, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(MAX_THREADS_ENV, raising=False)
    try:
        setup_runtime(compose("threads=3"))
        assert torch.get_num_threads() == 3
        monkeypatch.setenv(MAX_THREADS_ENV, "2")  # a ceiling from outside caps it, the config stays as written
        setup_runtime(compose("threads=3"))
        assert torch.get_num_threads() == 2
        prepare_run(compose(*FAST, "threads=1"), tmp_path, ROOT)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv(MAX_THREADS_ENV)
        monkeypatch.setenv(SLURM_CPUS_ENV, "2")  # inside a SLURM allocation: the CPUs it was given cap the threads
        monkeypatch.setenv("SLURM_JOB_ID", "41")
        setup_runtime(compose("threads=3"))
        assert runtime_tags() == {"torch_threads": "2", "slurm_job_id": "41"}
        monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
        assert runtime_tags()["slurm_job_id"] == "40_1"
    finally:
        torch.set_num_threads(1)


def test_crash_marks_run_failed_not_running(compose, tmp_path) -> None:
    cfg = compose(*FAST, "+callbacks.boom._target_=test_training.Boom")
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_and_test(cfg, tmp_path, ROOT)
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "RuntimeError: disk on fire", "the exception's type and message, exactly"


@pytest.mark.parametrize(
    ("override", "key"),
    [("optimizer.lr=-1", "optimizer"), ("backbone.dropout=-0.1", "backbone.dropout"), ("threads=0", "threads"),
     ("backbone.activation=swishy", "backbone.activation"), ("trainer.precision=17", "trainer")],
)
def test_bad_values_fail_before_any_run(compose, tmp_path, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        train_and_test(compose(*FAST, override), tmp_path, ROOT)
    assert str(info.value).startswith(key)
    assert _runs() == []


def test_curves_have_one_row_per_epoch_and_best_epoch_is_tagged(compose, tmp_path) -> None:
    result = train_and_test(compose(*FAST, "trainer.max_epochs=3"), tmp_path, ROOT)
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "epoch" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.tags["stopped_epoch"] == "3", "epochs trained, counted from 1"
    assert run.data.tags["best_epoch"] in {"1", "2", "3"}
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
