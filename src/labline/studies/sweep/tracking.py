"""MLflow for a study: one parent run per study, one nested child run per trial.

The child runs are the trials' own training runs (they nest under the open parent in this process, or
under ``LABLINE_PARENT_RUN_ID`` in worker processes); this module opens the parent, completes each child
with its Optuna state, and gives the parent the best trial and the study plots at the end. Every run goes
through ``tracking.lifecycle``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from labline.tracking.lifecycle import PARENT_ENV, RunHandle, close_run, open_run, tag_run
from labline.tracking.store import Destination

PARENT_ATTR = "mlflow_parent_run_id"


class StudyTracking:
    def __init__(self, destination: Destination):
        self.store, self.experiment = destination.store, destination.experiment_name
        self.experiment_id = self.store.experiment_id(self.experiment)
        self.parent_run_id: str | None = os.environ.get(PARENT_ENV)

    @contextmanager
    def parent(self, study: optuna.Study, info: dict[str, str], session: dict[str, str],
               space: dict[str, str]) -> Iterator[RunHandle]:
        """The study's parent run (``info`` as params), re-opened when the study is resumed; ``session`` (budget,
        workers) may change between invocations, so it goes to tags."""
        previous = study.user_attrs.get(PARENT_ATTR)
        resumed = bool(previous) and self.store.find_run(previous) is not None
        if resumed:
            opened = open_run(self.store, self.experiment, "", run_id=previous,
                              tags={"resumed_at_trial": str(len(study.trials)), **session})
        else:
            opened = open_run(self.store, self.experiment, f"study-{study.study_name}",
                              tags={"optuna_study": study.study_name, "labline.kind": "optuna-study", **session})
        with opened as run:
            if not resumed:
                run.log_params(info)
                run.log_dict(space, "search_space.json")
                study.set_user_attr(PARENT_ATTR, run.run_id)
            self.parent_run_id = run.run_id
            yield run

    def record_trial(self, trial: FrozenTrial) -> None:
        """Tag the trial's run with its Optuna outcome; a trial that died before its run started still gets a
        FAILED child, so the parent lists every trial."""
        reason = trial.user_attrs.get("fail_reason")
        tags = {"optuna_state": trial.state.name, **({"fail_reason": reason[:5000]} if reason else {})}
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            with open_run(self.store, self.experiment, f"trial-{trial.number}", parent=self.parent_run_id,
                          tags={"optuna_trial": str(trial.number), **tags}) as run:
                run.log_params(trial.params)
                run.end_as("FAILED")
            return
        tag_run(self.store, run_id, tags)
        if trial.state == TrialState.FAIL and self.store.get_run(run_id).info.status == "FINISHED":
            close_run(self.store, run_id, "FAILED")  # it trained, but its objective is unusable

    def mark_interrupted(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose process died: its run stays RUNNING forever unless told otherwise.

        The trial learns its run id only when fitting starts; a process killed between opening the run
        and that moment left a run the trial does not name, found by its study and trial tags instead."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        named = self.store.find_run(run_id) if run_id else None
        runs = [named] if named is not None else self.store.search(
            f"tags.optuna_study = '{study.study_name}' and tags.optuna_trial = '{trial.number}' and "
            "attributes.status = 'RUNNING'", [self.experiment_id])
        for run in runs:
            if run.info.status == "RUNNING":
                close_run(self.store, run.info.run_id, "KILLED", optuna_state="FAIL",
                          stop_reason="interrupted: its process stopped sending heartbeats")

    @staticmethod
    def finish(parent: RunHandle, summary: dict[str, Any], plots: list[Path], best_config: Path | None) -> None:
        """Best value and parameters, trial counts and plots on the parent run (the parent's block closes it)."""
        parent.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        parent.set_tags({f"best.{k}": str(v)[:5000] for k, v in summary.get("best_params", {}).items()})
        parent.log_dict({k: v for k, v in summary.items() if isinstance(v, (dict, list))}, "best.json")
        for path in plots:
            parent.log_artifact(path, "plots")
        if best_config is not None:
            parent.log_artifact(best_config)


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
