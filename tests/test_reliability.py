"""Failure paths in-process: non-finite losses, signals, resume, reproduce."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from labline.callbacks.guards import NonFiniteError
from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.interrupts import Interrupted
from labline.runs import resume
from labline.runs.context import RunContext
from labline.runs.lightning_run import train_and_test
from labline.runs.records import config_hash
from labline.studies.reproduce import reproduce
from labline.tracking.store import tracking_uri
from testroot import ROOT

FAST = ["+trainer.limit_train_batches=4", "threads=1", "callbacks=none", "logger.experiment_name=rel"]


class PoisonBatch(pl.Callback):
    """Puts a NaN into one training batch, as a corrupt sample or an overflow would."""

    def __init__(self, at_step: int = 2):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.at_step:
            batch[0][0].fill_(float("nan"))


class TermAt(pl.Callback):
    """Sends this process a real SIGTERM at the end of the given epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri())


def _runs() -> list:
    exp = _client().get_experiment_by_name("rel")
    return [] if exp is None else _client().search_runs([exp.experiment_id])


def test_nonfinite_loss_stops_the_run_as_failed_with_the_step(compose, tmp_path) -> None:
    with pytest.raises(NonFiniteError, match="global step 2"):
        train_and_test(compose(*FAST, "trainer.max_epochs=2"), tmp_path, ROOT, context=RunContext(callbacks=[PoisonBatch(2)]))
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert "global step 2" in run.data.tags["failure_reason"]


class PoisonGradient(pl.Callback):
    """A finite loss whose gradient overflows: every gradient of one step becomes inf."""

    def __init__(self, at_step: int = 2):
        self.at_step, self.handles = at_step, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.at_step:
            self.handles.append(next(pl_module.parameters()).register_hook(lambda grad: grad * float("inf")))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        while self.handles:
            self.handles.pop().remove()


def test_a_nonfinite_gradient_stops_the_run_as_failed_with_the_step(compose, tmp_path) -> None:
    with pytest.raises(NonFiniteError, match="non-finite gradient at global step 2"):
        train_and_test(compose(*FAST, "trainer.max_epochs=2"), tmp_path, ROOT,
                       context=RunContext(callbacks=[PoisonGradient(2)]))
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "NonFiniteError: non-finite gradient at global step 2 (epoch 1)"


def test_nonfinite_skip_drops_the_batch_and_counts_it(compose, tmp_path) -> None:
    cfg = compose(*FAST, "trainer.max_epochs=2", "nonfinite=skip", "backbone=mlp", "backbone.norm=none")
    result = train_and_test(cfg, tmp_path, ROOT, context=RunContext(callbacks=[PoisonBatch(2)]))
    run = _client().get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["skipped_batches"] == "1"
    assert 0.0 < result["test/acc"] <= 1.0


@pytest.mark.parametrize(("bad", "flagged"), [(float("nan"), True), (-float("inf"), True), (1e30, False)])
def test_gradient_guard_flags_exactly_non_finite_entries(bad: float, flagged: bool) -> None:
    """Huge but finite gradients are not 'non-finite' (a 2-norm of them would overflow to inf)."""
    from labline.callbacks.guards import NonFiniteGuard

    module = torch.nn.Linear(3, 2)
    module.weight.grad = torch.ones(2, 3)
    module.bias.grad = torch.tensor([1.0, bad])
    guard = NonFiniteGuard("skip")
    guard.on_before_optimizer_step(SimpleNamespace(global_step=7, current_epoch=0), module,
                                   torch.optim.SGD(module.parameters(), lr=0.1))
    assert guard.skipped == int(flagged)
    assert (module.weight.grad is None) == flagged


def test_unknown_nonfinite_action_is_a_config_error(compose, tmp_path) -> None:
    with pytest.raises(ConfigError, match="nonfinite"):
        train_and_test(compose(*FAST, "nonfinite=ignore"), tmp_path, ROOT)


def test_sigterm_stops_cleanly_and_the_same_config_resumes_to_identical_metrics(compose, tmp_path) -> None:
    cfg = compose(*FAST, "trainer.max_epochs=4")
    with pytest.raises(Interrupted) as stop:
        train_and_test(cfg, tmp_path / "first", ROOT, context=RunContext(callbacks=[TermAt(1)]))
    assert stop.value.exit_code == 143
    (killed,) = _runs()
    assert killed.info.status == "KILLED"
    assert resume.latest_checkpoint(tmp_path / "first") is not None
    assert resume.pointer(ROOT, config_hash(to_plain(cfg))).exists()

    resumed = train_and_test(cfg, tmp_path / "second", ROOT)
    assert resumed["run_id"] == killed.info.run_id, "resumes into the same MLflow run"
    run = _client().get_run(resumed["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in _client().get_metric_history(resumed["run_id"], "val/loss")]
    assert sorted(steps) == [1, 2, 3, 4], "no duplicated or missing epochs"
    assert not resume.pointer(ROOT, config_hash(to_plain(cfg))).exists()

    fresh = train_and_test(compose(*FAST, "trainer.max_epochs=4", "resume=false"), tmp_path / "fresh", ROOT)
    for key in ("test/acc", "test/loss"):
        assert resumed[key] == fresh[key], key


def test_a_run_in_another_context_does_not_resume_a_killed_run_of_the_same_config(compose, tmp_path) -> None:
    """Two sweep trials (or studies) can draw the same config: a killed trial's checkpoint is not another's."""
    cfg = compose(*FAST, "trainer.max_epochs=2")
    with pytest.raises(Interrupted):
        train_and_test(cfg, tmp_path / "first", ROOT, context=RunContext({"optuna_trial": "1"}, [TermAt(0)]))
    (killed,) = _runs()
    other = train_and_test(cfg, tmp_path / "second", ROOT, context=RunContext({"optuna_trial": "2"}))
    assert other["run_id"] != killed.info.run_id
    assert _client().get_run(killed.info.run_id).info.status == "KILLED"
    assert _client().get_run(other["run_id"]).data.tags["optuna_trial"] == "2"
    resumed = train_and_test(cfg, tmp_path / "third", ROOT, context=RunContext({"optuna_trial": "1"}))
    assert resumed["run_id"] == killed.info.run_id, "the same context still resumes"


def test_reproduce_reports_drift_and_unknown_runs(compose, tmp_path) -> None:
    original = train_and_test(compose(*FAST, "trainer.max_epochs=1"), tmp_path / "orig", ROOT)
    client = _client()
    client.set_tag(original["run_id"], "data_md5", "0" * 32)
    with pytest.raises(ConfigError, match="data md5"):
        reproduce(original["run_id"], ROOT)
    with pytest.raises(ConfigError, match="no MLflow run 'deadbeef'"):
        reproduce("deadbeef", ROOT)
