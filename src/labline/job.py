"""The Hydra job: what one ``labline train`` job runs, alone or as one job of a ``-m`` sweep.

It is the only place that knows both a single run and the studies that may contain it: a resampling split
(``split=kfold`` and friends) becomes a cross-validation, and inside an Optuna sweep the trial's reporting
and pruning callback and its tags reach the run as a ``RunContext``; otherwise one run of the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labline.core.config import name_dataset
from labline.data.pipeline import is_resampling
from labline.runs.dispatch import run_task
from labline.studies.sweep.context import trial_context


def train_job(cfg: DictConfig, out_dir: Path, root: Path) -> dict[str, Any]:
    name_dataset(cfg)
    if is_resampling(cfg) and cfg.split.get("fold") is None:
        from labline.studies.crossval import cross_validate

        return cross_validate(cfg, out_dir, root)
    return run_task(cfg, out_dir, root, context=trial_context())
