"""The Optuna trial of the training job running in this process, if any.

Hydra's launcher calls the job function with a config only; the sweeper puts
the trial here before launching, and ``labline.runs.lightning_run.train_job`` asks for the
callbacks and tags it needs. Kept free of heavy imports: ``train_job`` imports
it for every run, swept or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labline.runs.context import NO_CONTEXT, RunContext


@dataclass
class ActiveTrial:
    trial: Any  # optuna.Trial
    study_name: str
    prune: bool
    measure_complexity: bool
    reporter: Any = None  # the TrialReporter attached to the job, once train_job ran
    tags: dict[str, str] = field(default_factory=dict)
    start_from: Path | None = None  # a retried trial continues from its killed predecessor's checkpoint


_active: ActiveTrial | None = None


@contextmanager
def activate(trial: ActiveTrial) -> Iterator[ActiveTrial]:
    global _active
    _active = trial
    try:
        yield trial
    finally:
        _active = None


def trial_context() -> RunContext:
    """The reporting/pruning callback and MLflow tags a sweep trial adds to its job; nothing outside a sweep."""
    if _active is None:
        return NO_CONTEXT
    from labline.studies.sweep.reporter import TrialReporter

    _active.reporter = TrialReporter(_active.trial, prune=_active.prune, measure_complexity=_active.measure_complexity)
    tags = {"optuna_study": _active.study_name, "optuna_trial": str(_active.trial.number), **_active.tags}
    return RunContext(tags, [_active.reporter], _active.start_from, quiet=True)
