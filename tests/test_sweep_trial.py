"""One sweep trial in-process: the real training job reports to a real Optuna trial and is pruned;
how outcomes are judged; the best trial written as an experiment that composes back to the same config."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import optuna
import pytest
from hydra import compose
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from labline.core.config import compose_config, hydra_context
from labline.core.errors import ConfigError, exit_with
from labline.job import train_job
from labline.runs.context import RunContext
from labline.studies.sweep import best
from labline.studies.sweep.context import ActiveTrial, activate, trial_context
from labline.studies.sweep.reporter import TrialReporter
from labline.studies.sweep.study import make_pruner
from labline.studies.sweep.sweeper import _failure, _judge
from labline.tracking.store import tracking_uri
from testroot import CONF, ROOT

FAST = ["+trainer.limit_train_batches=3", "threads=1", "logger.experiment_name=unit", "test_after_fit=false",
        "trainer.enable_progress_bar=false"]


def test_outside_a_sweep_the_job_gets_no_callbacks_or_tags() -> None:
    assert trial_context() == RunContext()


def test_pruned_trial_stops_training_and_its_run_ends_finished_with_a_pruned_tag(compose, tmp_path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))  # val/acc < 1.1
    trial = study.ask()
    with activate(ActiveTrial(trial, "unit-study", prune=True, measure_complexity=False)) as active:
        result = train_job(compose(*FAST, "trainer.max_epochs=4"), tmp_path, ROOT)
    assert active.reporter.pruned_epoch == 1 and active.reporter.epochs == 1
    assert list(study.trials[0].intermediate_values) == [1], "steps count epochs trained"
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["pruned"], tags["pruned_epoch"], tags["stopped_epoch"]) == ("true", "1", "1")
    assert (tags["optuna_study"], tags["optuna_trial"]) == ("unit-study", "0")
    assert trial.user_attrs["mlflow_run_id"] == result["run_id"]
    assert _judge(result, None, active, ["best_value"])[0] == TrialState.PRUNED


def test_multi_objective_trial_measures_flops_and_reports_nothing(compose, tmp_path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with activate(ActiveTrial(trial, "unit-moo", prune=False, measure_complexity=True)) as active:
        result = train_job(compose(*FAST, "trainer.max_epochs=1"), tmp_path, ROOT)
    state, values, reason = _judge(result, None, active, ["best_value", "flops"])
    assert state == TrialState.COMPLETE and reason is None
    assert values[0] == result["best_value"] and values[1] > 0
    assert study.trials[0].intermediate_values == {}
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.metrics["model/flops"] == values[1]


def _validate(reporter: TrialReporter, values: list[float], mode: str) -> SimpleNamespace:
    """Lightning's side of ``on_validation_end``, one call per epoch; the trainer as the reporter sees it."""
    module = SimpleNamespace(monitor="val/x", monitor_mode=mode)
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False)
    for epoch, value in enumerate(values):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/x": value}
        reporter.on_validation_end(trainer, module)
        if trainer.should_stop:
            break
    return trainer


@pytest.mark.parametrize(("mode", "values", "reported"),
                         [("max", [0.5, 0.8, 0.6], {1: 0.5, 2: 0.8, 3: 0.8}), ("min", [0.9, 0.4, 0.7], {1: 0.9, 2: 0.4, 3: 0.4})])
def test_reporter_reports_the_best_value_so_far_per_epoch_trained(mode: str, values: list, reported: dict) -> None:
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", pruner=optuna.pruners.NopPruner())
    reporter = TrialReporter(study.ask(), prune=True, measure_complexity=False)
    _validate(reporter, values, mode)
    assert study.trials[0].intermediate_values == reported and reporter.epochs == 3


def test_the_presets_pruner_judges_a_trial_after_its_first_epoch() -> None:
    preset = OmegaConf.to_container(OmegaConf.load(CONF / "hparams_search" / "digits_cnn.yaml").hydra.sweeper.pruner)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(preset))
    first = TrialReporter(study.ask(), prune=True, measure_complexity=False)
    _validate(first, [0.9, 0.9], "max")  # the first trial is always promoted: nothing to compare with
    second = TrialReporter(study.ask(), prune=True, measure_complexity=False)
    trainer = _validate(second, [0.5, 0.95, 0.99], "max")
    assert trainer.should_stop and (second.epochs, second.pruned_epoch) == (1, 1)
    assert first.pruned_epoch is None


class _Reporter:
    pruned_epoch = None
    measured: dict = {}


@pytest.mark.parametrize(
    ("result", "needle"),
    [({"best_value": math.nan}, "nan"), ({"best_value": math.inf}, "inf"), ({"best_value": None}, "None"),
     ({"test/acc": 0.9}, "not among the job's results")],
)
def test_unusable_objective_fails_the_trial_with_its_reason(result: dict, needle: str) -> None:
    active = ActiveTrial(trial=None, study_name="s", prune=True, measure_complexity=False, reporter=_Reporter())
    state, values, reason = _judge(result, None, active, ["best_value"])
    assert state == TrialState.FAIL and values is None and needle in reason


def test_a_config_error_the_job_exited_on_is_the_failure_reason() -> None:
    with pytest.raises(SystemExit) as info:
        try:  # what `labline train`'s job function does with a user error
            raise ConfigError("backbone.dropout", "must be in [0, 1), got 1.5")
        except ConfigError as err:
            exit_with(err)
    assert _failure(info.value) == "ConfigError: backbone.dropout: must be in [0, 1), got 1.5"
    assert _failure(RuntimeError("disk\non fire")) == "RuntimeError: disk on fire"


def test_best_trial_is_written_as_an_experiment_that_composes_back(tmp_path) -> None:
    overrides = ["optimizer=sgd", "optimizer.lr=0.0123", "backbone.dropout=0.3", "data.batch_size=32",
                 "trainer.max_epochs=7", "test_after_fit=false"]
    with hydra_context(CONF):
        trial_cfg = compose("train", overrides=overrides, return_hydra_config=True)
        choices = best.group_choices(trial_cfg)
        base_cfg = compose("train", overrides=[f"{g}={o}" for g, o in choices.items()])
    text = best.experiment_yaml("unit_best", ["from a unit test"], trial_cfg, base_cfg)
    assert text.startswith("# @package _global_\n# from a unit test\n")
    assert "override /optimizer: sgd" in text and "betas" not in text, "only values that differ are written"
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    best.write_experiment(conf / "experiment", "unit_best", text)
    rerun = compose_config(["experiment=unit_best"], conf=conf)
    assert rerun.optimizer._target_ == "torch.optim.SGD" and rerun.optimizer.lr == 0.0123
    assert (rerun.backbone.dropout, rerun.data.batch_size, rerun.trainer.max_epochs) == (0.3, 32, 7)
    assert rerun.test_after_fit is True and rerun.run_name == "unit_best"
