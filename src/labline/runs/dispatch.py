"""One run of any task, whoever trains it: the one place that tells Lightning tasks from runner tasks.

A task whose config names a ``runner`` (scikit-learn baselines, which are not Lightning modules) is run by
that function, called like ``train_and_test``: ``runner(cfg, out_dir, root, do_test=..., context=...)``,
returning what ``train_and_test`` returns (it has no trainer, so the context's callbacks do not apply).
``labline train``, cross-validation folds, ablation runs and ``reproduce`` all come here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig

from labline.runs.context import NO_CONTEXT, RunContext
from labline.runs.lightning_run import train_and_test
from labline.runs.shift import SHIFT_KEY, check_shiftable


def run_task(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
             context: RunContext = NO_CONTEXT) -> dict[str, Any]:
    runner = cfg.task.get("runner")
    if runner:
        if cfg.get(SHIFT_KEY):
            check_shiftable(cfg)
        return get_object(runner)(cfg, out_dir, root, do_test=do_test, context=context)
    return train_and_test(cfg, out_dir, root, do_test=do_test, context=context)
