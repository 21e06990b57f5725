"""The DVC stages as functions of the composed config (``params.yaml``).

``train`` leaves one model in ``models/`` (``run.json`` names its MLflow run and checkpoint) and
``evaluate`` tests that model once. With a resampling split (``split=kfold`` and friends) that one model
is the refit: ``train`` cross-validates (one MLflow parent, one child per fold, the fold mean on the
parent, as ``labline train`` does) and then retrains on all non-test data, which ``evaluate`` tests.
Without ``split.refit`` there is no such model, so the stage refuses before anything trains. The curves
``dvc plots`` shows are then the folds' mean per epoch: the refit has no validation curve to show.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

from omegaconf import DictConfig

from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.data import pipeline
from labline.runs.context import RunContext

TAGS = {"pipeline": "dvc"}


def _mean_curves(sources: list[Path], target: Path) -> None:
    """Each per-epoch curve averaged over the folds that reached the epoch (column ``folds``: how many did;
    folds stop early at different epochs); blank where none of them logged it."""
    by_epoch: dict[int, list[dict[str, str]]] = {}
    for source in sources:
        with open(source, newline="") as fh:
            for row in csv.DictReader(fh):
                by_epoch.setdefault(int(row["epoch"]), []).append(row)
    fields = sorted({k for rows in by_epoch.values() for row in rows for k in row} - {"epoch"})
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "folds", *fields])
        writer.writeheader()
        for epoch, rows in sorted(by_epoch.items()):
            means = {}
            for field in fields:
                values = [float(row[field]) for row in rows if row.get(field) not in (None, "")]
                means[field] = math.fsum(values) / len(values) if values else ""
            writer.writerow({"epoch": epoch, "folds": len(rows), **means})


def _cross_validate(cfg: DictConfig, models: Path, root: Path, reports: Path) -> None:
    """Every fold, then the refit; ``models/run.json`` names the refit, ``reports/curves.csv`` holds the folds' mean."""
    from labline.studies.crossval import REFIT, cross_validate

    if not cfg.split.get("refit", False):
        raise ConfigError("split.refit", f"a {cfg.split.get('name', 'resampling')} split trains one model per fold and "
                          "none on all the data, but the evaluate stage tests one model",
                          "split.refit=true (`dvc exp run -S split.refit=true`), or `labline train` for the fold scores alone")
    result = cross_validate(cfg, models, root, test_refit=False, tags=TAGS)
    recorded = json.loads((models / REFIT / "run.json").read_text())
    write_json({"run_id": result["refit_run_id"], "checkpoint": f"{REFIT}/{recorded['checkpoint']}",
                "crossval_run_id": result["run_id"]}, models / "run.json")
    curves = [models / f"fold_{i}" / "curves.csv" for i in range(int(result["folds"]))]
    _mean_curves([c for c in curves if c.exists()], reports / "curves.csv")


def _train(cfg: DictConfig, root: Path) -> None:
    from labline.runs.lightning_run import train_and_test

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    if cfg.task.get("runner"):
        # A runner task (scikit-learn baselines) leaves no Lightning checkpoint for `evaluate` to test; its
        # own run already tests once and logs everything, so it is run with `labline train`, not as a stage.
        raise ConfigError("task", f"a task run by {cfg.task.runner} (no checkpoint to evaluate) is not a DVC pipeline stage",
                          "`labline train task=...` for scikit-learn baselines; a Lightning task in params.yaml")
    if pipeline.is_resampling(cfg):
        _cross_validate(cfg, models, root, reports)
        return
    train_and_test(cfg, models, root, do_test=False, context=RunContext(TAGS, kind="dvc"))
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(models / "curves.csv", reports / "curves.csv")


def _evaluate(cfg: DictConfig, root: Path) -> None:
    from labline.reporting.console import metrics_table
    from labline.runs.assembly import prepare_run
    from labline.runs.lightning_run import console_metrics, open_training_run, test

    models, reports = root / cfg.paths.models, root / cfg.paths.reports
    record = models / "run.json"
    if not record.exists():
        raise ConfigError(str(record), "not found", "run the train stage first: `dvc repro train`")
    recorded = json.loads(record.read_text())
    checkpoint = models / recorded["checkpoint"]
    if not checkpoint.exists():
        raise ConfigError(str(checkpoint), "checkpoint not found", "run the train stage first: `dvc repro train`")
    if pipeline.is_resampling(cfg):
        cfg = pipeline.with_fold(cfg, "all")  # the refit's data; the test part is every fold's
    run = prepare_run(cfg, models, root)
    with open_training_run(run, "", {}, run_id=recorded["run_id"]) as handle:
        metrics = test(run, handle, checkpoint, reports)
    metrics_table(console_metrics(run, metrics))


STAGES = {
    "prepare": pipeline.stage_prepare,
    "split": pipeline.stage_split,
    "preprocess": pipeline.stage_preprocess,
    "train": _train,
    "evaluate": _evaluate,
}


def run_stage(name: str, cfg: DictConfig, root: Path) -> None:
    STAGES[name](cfg, root)
