"""`labline train -m hparams_search=...`: the real CLI, Optuna, Lightning and MLflow in a project copy,
on tiny budgets (3 epochs of 3 batches per trial)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from project_copy import BIN, project_env, run_cli

from labline.core.config import compose_config

pytestmark = pytest.mark.e2e

TINY = ["hparams_search=digits_cnn", "trainer.max_epochs=3", "+trainer.limit_train_batches=3", "logger.log_checkpoint=false"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LONGER = ["hparams_search=digits_cnn", "trainer.max_epochs=5", "+trainer.limit_train_batches=3", "logger.log_checkpoint=false",
          "threads=1", "hydra.sweeper.n_trials=3", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.pruner.name=none"]


def _study(project: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{project / 'optuna.db'}")


def _runs(project: Path, study: str) -> tuple[object, list]:
    """The study's MLflow parent run and every run nested under it."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.optuna_study = '{study}'")
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "optuna-study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _sweep(project: Path, study: str, *args: str) -> subprocess.CompletedProcess:
    result = run_cli(project, "labline", "train", "-m", *TINY, f"hydra.sweeper.study_name={study}", *args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_pruning_study_with_a_failing_trial(project: Path) -> None:
    # lr=1e30 makes SGD diverge: the non-finite guard raises inside fit, at runtime
    result = _sweep(project, "prune", "threads=1", "hydra.sweeper.n_trials=5", "hydra.sweeper.max_failures=10",
                    "hydra.sweeper.sampler.name=random", "hydra.sweeper.pruner.name=median",
                    "+hydra.sweeper.pruner.n_startup_trials=2", "+hydra.sweeper.pruner.n_warmup_steps=0", "optimizer=sgd",
                    "optimizer.lr=choice(0.03, 0.003, 0.0003, 1e30)")
    trials = _study(project, "prune").trials
    states = [t.state for t in trials]
    assert sum(s in FINISHED for s in states) == 5
    assert TrialState.PRUNED in states, "some trials must be pruned"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("NonFiniteError" in t.user_attrs["fail_reason"] for t in failed)
    assert max(t.number for t in trials if t.state in FINISHED) > failed[0].number, "the study goes on after a failure"

    parent, children = _runs(project, "prune")
    assert parent.info.status == "FINISHED"
    by_trial = {int(r.data.tags["optuna_trial"]): r for r in children}
    assert sorted(by_trial) == [t.number for t in trials], "one child run per trial"
    for trial in trials:
        run = by_trial[trial.number]
        assert run.data.tags["optuna_state"] == trial.state.name
        expected = {TrialState.FAIL: "FAILED", TrialState.PRUNED: "FINISHED", TrialState.COMPLETE: "FINISHED"}
        assert run.info.status == expected[trial.state]
        assert (run.data.tags.get("pruned") == "true") == (trial.state == TrialState.PRUNED)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {f"plots/{p}.png" for p in ("optimization_history", "parallel_coordinates", "param_importances",
                                        "intermediate_values")} <= plots
    best = _study(project, "prune").best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)

    assert "labline train experiment=prune_optuna_best" in result.stdout
    rerun = compose_config(["experiment=prune_optuna_best"], conf=project / "conf")
    assert rerun.optimizer.lr == best.params["optimizer.lr"] and rerun.test_after_fit is True


def test_killed_study_resumes_to_exactly_n_trials(project: Path) -> None:
    # No pruning and 5 epochs: a trial pruned at its first report is RUNNING with values for a few milliseconds only.
    args = ["labline", "train", "-m", *LONGER, "hydra.sweeper.study_name=resume"]
    log = project / "killed-session.log"
    with log.open("w") as out:
        first = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=project, env=project_env(project), stdout=out,
                                 stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 500
    alive_at_kill = False
    try:
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.3)
            try:
                trials = _study(project, "resume").trials
            except KeyError:  # the study does not exist yet
                continue
            # mid-trial: one trial done, the next one RUNNING with its MLflow run open and an epoch trained
            if sum(t.state in FINISHED for t in trials) >= 1 and any(
                    t.state == TrialState.RUNNING and t.user_attrs.get("mlflow_run_id") and t.intermediate_values
                    for t in trials):
                break
    finally:
        alive_at_kill = first.poll() is None
        first.kill()  # SIGKILL: no handler runs, the trial in flight stays RUNNING in the storage
        first.wait()
    before = _study(project, "resume").trials
    states = [(t.number, t.state.name) for t in before]
    assert alive_at_kill, f"the session ended before it was killed: {states}\n{log.read_text()[-3000:]}"
    assert 1 <= sum(t.state in FINISHED for t in before) < 3, states
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(running) == 1, f"one trial in flight when killed: {states}\n{log.read_text()[-3000:]}"
    (in_flight,) = running
    killed_run = in_flight.user_attrs["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert client.get_run(killed_run).info.status == "RUNNING", "killed while its training run was open"

    run_cli_result = run_cli(project, "labline", "train", "-m", *LONGER, "hydra.sweeper.study_name=resume", timeout=600)
    assert run_cli_result.returncode == 0, run_cli_result.stdout[-3000:] + run_cli_result.stderr[-3000:]
    trials = _study(project, "resume").trials
    assert sum(t.state in FINISHED for t in trials) == 3
    assert [t.number for t in trials] == list(range(len(trials))), "no repeated or missing trial numbers"
    assert all(t.state != TrialState.RUNNING for t in trials)
    for old in before:
        if old.state in FINISHED:
            assert trials[old.number].state == old.state and trials[old.number].params == old.params
    finished_params = [tuple(sorted(t.params.items())) for t in trials if t.state in FINISHED]
    assert len(set(finished_params)) == len(finished_params), "completed trials are not repeated"
    assert len({t.user_attrs["session"] for t in trials}) == 2
    assert f"{sum(t.state in FINISHED for t in before)} of 3 trials finished" in run_cli_result.stdout

    _, children = _runs(project, "resume")
    assert all(r.info.status != "RUNNING" for r in children)
    assert trials[in_flight.number].state == TrialState.FAIL, "the stale trial was failed by its heartbeat"
    assert client.get_run(killed_run).info.status == "KILLED"


def test_two_parallel_workers_share_one_study(project: Path) -> None:
    result = _sweep(project, "parallel", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2")
    assert "2 workers" in result.stdout
    trials = _study(project, "parallel").trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in FINISHED for t in trials), [t.user_attrs.get("fail_reason") for t in trials]
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}, "both workers ran trials"
    assert len({t.user_attrs["session"] for t in trials}) == 1
    _, children = _runs(project, "parallel")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2, 3]
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert {r.data.params["threads"] for r in children} == {threads}, "each worker gets cores / workers threads"


def test_search_space_error_exits_2_before_any_trial(project: Path) -> None:
    # Every choice is composed before the study exists; syntax errors (empty range, ...) are unit-tested.
    result = run_cli(project, "labline", "train", "-m", *TINY, "hydra.sweeper.study_name=typo", "optimizer=choice(adam, adamm)")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optimizer=adamm" in lines[0], result.stderr
    assert "typo" not in optuna.get_all_study_names(f"sqlite:///{project / 'optuna.db'}")
