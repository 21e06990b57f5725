"""Samplers, pruners, storages and the shared-study budget, on real Optuna studies (no training)."""

from __future__ import annotations

import math

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from labline.core.errors import ConfigError
from labline.studies.sweep.space import build_space
from labline.studies.sweep.study import Budget, SharedStudy, cma_es_note, make_pruner, make_sampler, make_storage, sampler_seed
from testroot import CONF

SPACE = build_space({"optimizer": "choice(adam, sgd)", "optimizer.lr": "tag(log, interval(1e-4, 1e-1))"}, [])
GRID = build_space({"optimizer": "choice(adam, sgd)", "data.batch_size": "32,64"}, [])


def _ignore(study, trial) -> None:
    return None


@pytest.mark.parametrize(
    ("name", "cls"),
    [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
     ("nsga2", optuna.samplers.NSGAIISampler), ("grid", optuna.samplers.GridSampler)],
)
def test_samplers_by_name(name: str, cls) -> None:
    assert isinstance(make_sampler({"name": name, "seed": 0}, GRID, seed=0), cls)


def test_sampler_options_reach_optuna_and_mistakes_are_config_errors() -> None:
    tpe = make_sampler({"name": "tpe", "n_startup_trials": 3}, SPACE, seed=1)
    assert tpe._n_startup_trials == 3
    # a preset's NSGA-II option does not block switching to random search on the command line
    assert isinstance(make_sampler({"name": "random", "population_size": 4}, SPACE, seed=0), optuna.samplers.RandomSampler)
    with pytest.raises(ConfigError, match="hydra.sweeper.sampler.name: unknown sampler 'bayes'"):
        make_sampler({"name": "bayes"}, SPACE, seed=0)
    with pytest.raises(ConfigError, match="hydra.sweeper.sampler.n_startup: no sampler takes this option"):
        make_sampler({"name": "tpe", "n_startup": 3}, SPACE, seed=0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("median", optuna.pruners.MedianPruner), ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
     ("hyperband", optuna.pruners.HyperbandPruner), ("none", optuna.pruners.NopPruner)],
)
def test_pruners_by_name(name: str, cls) -> None:
    assert isinstance(make_pruner({"name": name}), cls)


def test_pruner_defaults_and_overrides() -> None:
    median = make_pruner({"name": "median", "n_warmup_steps": 4})
    assert median._n_startup_trials == 5 and median._n_warmup_steps == 4
    hyperband = make_pruner({"name": "hyperband", "n_warmup_steps": 4, "reduction_factor": 2})
    assert hyperband._reduction_factor == 2
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner.name"):
        make_pruner({"name": "patience"})
    with pytest.raises(ConfigError, match="hydra.sweeper.pruner.warmup"):
        make_pruner({"name": "median", "warmup": 4})


def test_seed_differs_per_worker_and_per_resume_but_is_reproducible() -> None:
    seeds = {sampler_seed(0, trials, worker) for trials in (0, 3) for worker in (0, 1)}
    assert len(seeds) == 4
    assert sampler_seed(0, 3, 1) == sampler_seed(0, 3, 1)
    assert sampler_seed(None, 3, 1) is None


def _study(direction: str = "maximize", storage=None, name: str = "s") -> SharedStudy:
    storage = storage or make_storage(None, heartbeat_interval=0, on_stale=_ignore)
    return SharedStudy.open(name, storage, [direction], create=True, heartbeat_interval=0)


def test_default_storage_is_sqlite_in_the_project_and_created_once(isolated_store) -> None:
    first = _study()
    first.study.tell(first.study.ask(SPACE.distributions), 0.5)
    again = _study()
    assert (isolated_store / "optuna.db").exists()
    assert [t.state for t in again.trials()] == [TrialState.COMPLETE]


def test_journal_file_storage(isolated_store) -> None:
    shared = _study(storage=make_storage("studies/s.log", heartbeat_interval=10, on_stale=_ignore))
    shared.study.tell(shared.study.ask(SPACE.distributions), 0.5)
    assert (isolated_store / "studies" / "s.log").stat().st_size > 0
    assert not shared.heartbeats


def test_direction_of_an_existing_study_cannot_change() -> None:
    _study("maximize")
    with pytest.raises(ConfigError, match="already exists with direction"):
        _study("minimize")


def test_orphaned_running_trials_of_an_earlier_session_fail_without_heartbeats(isolated_store) -> None:
    storage = make_storage(str(isolated_store / "j.log"), heartbeat_interval=0, on_stale=_ignore)
    shared = _study(storage=storage)
    shared.ask(SPACE, {"session": "old"})
    shared.ask(SPACE, {"session": "new"})
    failed = []
    shared.fail_orphans("new", lambda study, trial: failed.append(trial.number))
    assert [t.state for t in shared.trials()] == [TrialState.FAIL, TrialState.RUNNING]
    assert failed == [0]


def _trial(state: TrialState, **attrs):
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs=attrs)


def test_budget_counts_finished_trials_waits_for_running_ones_and_limits_failures() -> None:
    budget = Budget(n_trials=3, max_failures=2, session="s")
    done = [_trial(TrialState.COMPLETE), _trial(TrialState.PRUNED)]
    assert budget.decide(done) == "ask"
    assert budget.decide([*done, _trial(TrialState.RUNNING)]) == "wait"
    assert budget.decide([*done, _trial(TrialState.COMPLETE)]) == "stop"
    failures = [_trial(TrialState.FAIL, session="s", fail_reason="boom")] * 2
    assert budget.decide([*done, *failures]) == "stop"
    earlier = [_trial(TrialState.FAIL, session="old", fail_reason="boom")] * 2 + [_trial(TrialState.FAIL, session="s")]
    assert budget.decide([*done, *earlier]) == "ask", "earlier runs' failures and interrupted trials do not count"


def test_grid_sampler_can_be_told_its_last_point_outside_optimize() -> None:
    shared = _study()
    shared.study.sampler = make_sampler({"name": "grid"}, GRID, seed=0)
    seen = set()
    for _ in range(4):
        trial = shared.study.ask(GRID.distributions)
        seen.add(tuple(sorted(trial.params.items())))
        shared.study.tell(trial, 1.0)
    assert len(seen) == 4


def test_cmaes_samples_the_numeric_params_and_leaves_categorical_ones_to_tpe(recwarn) -> None:
    preset = OmegaConf.load(CONF / "hparams_search" / "digits_cnn.yaml").hydra.sweeper.params
    space = build_space(OmegaConf.to_container(preset), [])  # optimizer and batch size are categorical
    shared = _study()
    shared.study.sampler = make_sampler({"name": "cmaes", "seed": 0}, space, seed=0)
    assert isinstance(shared.study.sampler, optuna.samplers.CmaEsSampler)
    for _ in range(4):
        trial = shared.ask(space, {})
        shared.study.tell(trial, -abs(math.log10(trial.params["optimizer.lr"]) + 2.5) + trial.params["backbone.dropout"])
    trials = shared.trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all("cma:generation" in t.system_attrs for t in trials[1:]), "after its one startup trial, CMA-ES samples"
    assert not [w for w in recwarn if "independently" in str(w.message)], "no warning per trial and parameter"
    note = cma_es_note({"name": "cmaes"}, space)
    assert "categorical optimizer, data.batch_size independently by TPE" in note and "optimizer.lr" in note
    assert cma_es_note({"name": "tpe"}, space) is None


def test_cmaes_refuses_a_space_with_only_categorical_params() -> None:
    with pytest.raises(ConfigError) as info:
        make_sampler({"name": "cmaes"}, GRID, seed=0)
    assert str(info.value) == ("hydra.sweeper.sampler.name: cmaes samples float and int parameters, and ['optimizer', "
                               "'data.batch_size'] are all categorical (valid: tpe, random, grid)")


def test_a_killed_trials_run_is_marked_killed_even_before_the_trial_knew_its_run_id(isolated_store) -> None:
    """SIGKILL between opening the trial's MLflow run and fitting: the trial has no mlflow_run_id yet."""
    from mlflow.tracking import MlflowClient

    from labline.studies.sweep.tracking import StudyTracking
    from labline.tracking.store import Destination

    tracking = StudyTracking(Destination(experiment_name="sweep-unit"))
    study = optuna.create_study(study_name="orphan")
    unnamed, named = study.ask(), study.ask()
    runs = {}
    for trial in (unnamed, named):
        runs[trial.number] = tracking.store.client.create_run(
            tracking.experiment_id, tags={"optuna_study": "orphan", "optuna_trial": str(trial.number)}).info.run_id
    named.set_user_attr("mlflow_run_id", runs[named.number])
    bystander = tracking.store.client.create_run(tracking.experiment_id, tags={"optuna_study": "other", "optuna_trial": "0"})
    for trial in study.trials:
        tracking.mark_interrupted(study, trial)
    client = MlflowClient(tracking.store.uri)
    assert [client.get_run(runs[n]).info.status for n in (0, 1)] == ["KILLED", "KILLED"]
    assert client.get_run(bystander.info.run_id).info.status == "RUNNING", "another study's trial 0 is left alone"
