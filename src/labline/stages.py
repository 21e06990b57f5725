"""The DVC stages as functions of the composed config (``params.yaml``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig

from labline.data import stages as data_stages
from labline.errors import ConfigError


def _train(cfg: DictConfig, root: Path) -> None:
    from labline.training import train_and_test

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    train_and_test(cfg, models, root, do_test=False, tags={"pipeline": "dvc"})
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(models / "curves.csv", reports / "curves.csv")


def _evaluate(cfg: DictConfig, root: Path) -> None:
    from labline.report import metrics_table
    from labline.training import prepare_run, test

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    record = models / "run.json"
    if not record.exists():
        raise ConfigError(str(record), "not found", "run the train stage first: `dvc repro train`")
    recorded = json.loads(record.read_text())
    checkpoint = models / recorded["checkpoint"]
    if not checkpoint.exists():
        raise ConfigError(str(checkpoint), "checkpoint not found", "run the train stage first: `dvc repro train`")
    run = prepare_run(cfg, models, root)
    with run.tracker.start("", run.config, {}, root, run_id=recorded["run_id"]):
        metrics = test(run, checkpoint, reports)
    metrics_table(metrics)


STAGES = {
    "prepare": data_stages.stage_prepare,
    "split": data_stages.stage_split,
    "preprocess": data_stages.stage_preprocess,
    "train": _train,
    "evaluate": _evaluate,
}


def run_stage(name: str, cfg: DictConfig, root: Path) -> None:
    STAGES[name](cfg, root)
