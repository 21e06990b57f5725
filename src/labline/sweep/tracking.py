"""MLflow for a study: one parent run per study, one nested child run per trial.

The child runs are the trials' own training runs (``MlflowTracker`` nests them
under the active parent, or under ``LABLINE_PARENT_RUN_ID`` in worker
processes); this module opens the parent, completes each child with its Optuna
state, and gives the parent the best trial and the study plots at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from labline.tracking.store import ensure_experiment
from labline.tracking.tracker import PARENT_ENV

PARENT_ATTR = "mlflow_parent_run_id"


class StudyTracking:
    def __init__(self, experiment_name: str, tracking_uri: str | None = None):
        uri, self.experiment_id = ensure_experiment(experiment_name, tracking_uri)
        self.client = MlflowClient(uri)
        self.parent_run_id: str | None = os.environ.get(PARENT_ENV)

    def open_parent(self, study: optuna.Study, info: dict[str, str], session: dict[str, str], space: dict[str, str]) -> str:
        """Start the study's parent run (``info`` as params), or re-open it when the study is resumed;
        ``session`` (budget, workers) may change between invocations, so it goes to tags."""
        previous = study.user_attrs.get(PARENT_ATTR)
        if previous and self._exists(previous):
            mlflow.start_run(run_id=previous)
            mlflow.set_tag("resumed_at_trial", str(len(study.trials)))
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=f"study-{study.study_name}",
                                   tags={"optuna_study": study.study_name, "labline.kind": "optuna-study"})
            mlflow.log_params(info)
            mlflow.log_dict(space, "search_space.json")
            study.set_user_attr(PARENT_ATTR, run.info.run_id)
        mlflow.set_tags(session)
        self.parent_run_id = mlflow.active_run().info.run_id
        return self.parent_run_id

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def record_trial(self, trial: FrozenTrial) -> None:
        """Tag the trial's run with its Optuna outcome; a trial that died before its run
        started still gets a FAILED child, so the parent lists every trial."""
        reason = trial.user_attrs.get("fail_reason")
        tags = {"optuna_state": trial.state.name, **({"fail_reason": reason[:5000]} if reason else {})}
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number}",
                                         tags={"mlflow.parentRunId": self.parent_run_id, "optuna_trial": str(trial.number),
                                               **tags})
            for key, value in trial.params.items():
                self.client.log_param(run.info.run_id, key, str(value))
            self.client.set_terminated(run.info.run_id, "FAILED")
            return
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        if trial.state == TrialState.FAIL and self.client.get_run(run_id).info.status == "FINISHED":
            self.client.set_terminated(run_id, "FAILED")  # it trained, but its objective is unusable

    def mark_interrupted(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose process died: its run stays RUNNING forever unless told otherwise.

        The trial learns its run id only when fitting starts; a process killed between opening the run
        and that moment left a run the trial does not name, found by its study and trial tags instead."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and self._exists(run_id):
            runs = [self.client.get_run(run_id)]
        else:
            runs = self.client.search_runs([self.experiment_id], f"tags.optuna_study = '{study.study_name}' and "
                                           f"tags.optuna_trial = '{trial.number}' and attributes.status = 'RUNNING'")
        for run in runs:
            if run.info.status == "RUNNING":
                self.client.set_tag(run.info.run_id, "optuna_state", "FAIL")
                self.client.set_tag(run.info.run_id, "stop_reason", "interrupted: its process stopped sending heartbeats")
                self.client.set_terminated(run.info.run_id, "KILLED")

    def finish(self, summary: dict[str, Any], plots: list[Path], best_config: Path | None) -> None:
        """Best value and parameters, trial counts and plots on the parent run, then close it."""
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics(metrics)
        mlflow.set_tags({f"best.{k}": str(v)[:5000] for k, v in summary.get("best_params", {}).items()})
        mlflow.log_dict({k: v for k, v in summary.items() if isinstance(v, (dict, list))}, "best.json")
        for path in plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        if best_config is not None:
            mlflow.log_artifact(str(best_config))
        self.end_parent("FINISHED")

    def end_parent(self, status: str) -> None:
        mlflow.end_run(status=status)


def summarize(study: optuna.Study, objectives: list[str]) -> dict[str, Any]:
    """Counts, epochs spent and the best trial (single objective) or Pareto front (several)."""
    trials = study.get_trials(deepcopy=False)
    summary: dict[str, Any] = {f"n_{state.name.lower()}": sum(t.state == state for t in trials)
                               for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary["epochs_total"] = sum(t.user_attrs.get("epochs", 0) for t in trials)
    best = best_trials(study)
    if not best:
        return summary
    if len(objectives) == 1:
        summary.update({"best_value": best[0].value, "best_trial": best[0].number, "best_params": best[0].params})
    else:
        summary["pareto_front"] = [{"trial": t.number, **dict(zip(objectives, t.values, strict=True)), "params": t.params}
                                   for t in best]
        summary["pareto_size"] = len(best)
    return summary


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial, or the Pareto front sorted by the first objective; empty if nothing completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    first = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(study.best_trials, key=lambda t: t.values[0], reverse=first)

