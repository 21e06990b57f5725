"""The DVC stages as functions of the composed config (``params.yaml``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig

from labline.data import stages as data_stages
from labline.data.files import write_json
from labline.errors import ConfigError


def _train(cfg: DictConfig, root: Path) -> None:
    from labline.training import default_run_name, fit, prepare_run, run_tags

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    run = prepare_run(cfg, models, root)
    with run.tracker.start(default_run_name(cfg), run.config, {**run_tags(run), "pipeline": "dvc"}, root):
        best = fit(run)
        target = models / "model.ckpt"
        if best != target:
            shutil.copyfile(best, target)
        write_json({"run_id": run.tracker.run_id}, models / "run.json")
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.curves.csv_path, reports / "curves.csv")


def _evaluate(cfg: DictConfig, root: Path) -> None:
    from labline.report import metrics_table
    from labline.training import prepare_run, test

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    for needed in (models / "model.ckpt", models / "run.json"):
        if not needed.exists():
            raise ConfigError(str(needed), "not found", "run the train stage first: `dvc repro train`")
    run_id = json.loads((models / "run.json").read_text())["run_id"]
    run = prepare_run(cfg, models, root)
    with run.tracker.start("", run.config, {}, root, run_id=run_id):
        metrics = test(run, models / "model.ckpt", reports)
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
