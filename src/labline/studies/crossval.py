"""k-fold cross-validation of one config: one MLflow parent, one child per fold, the fold mean +/- std on the parent.

This is the protocol of the textbook: estimate a configuration by its mean validation score over the
folds (what a sweep should optimise), then, with ``split.refit: true``, retrain it once on all non-test
data and test that model. With refit the folds do not touch the test split at all; without it each
fold model is tested (``test_after_fit``) and the test metrics are averaged too.

The refit has no validation data left, so it trains for the folds' mean best epoch count and drops the
callbacks that watch a validation metric (early stopping); a scheduler that watches one cannot refit.
An interrupted cross-validation resumes: the same command re-opens its unfinished parent and skips
folds that already finished. Folds and refit go through ``run_task``, so a task with a ``runner``
(scikit-learn baselines) cross-validates like a Lightning task; it has no epochs, so its refit is its
fit on all non-test data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.data.pipeline import fold_count, with_fold
from labline.reporting.console import console
from labline.runs.check import check_build
from labline.runs.context import RunContext
from labline.runs.dispatch import run_task
from labline.runs.records import config_hash, default_run_name
from labline.studies.ablation.stats import mean_std
from labline.studies.parents import child_tags, study_parent
from labline.tracking.lifecycle import RunHandle

REFIT = "refit"


def refit_config(cfg: DictConfig, epochs: int) -> DictConfig:
    """Train on every non-test sample for ``epochs``, without the callbacks that need validation data."""
    scheduler = cfg.get("scheduler") or {}
    if scheduler.get("monitor"):
        raise ConfigError("split.refit", f"the scheduler watches {scheduler.monitor}, but a refit has no validation data",
                          "a scheduler without monitor (cosine, step, none), or split.refit=false")
    refit = with_fold(cfg, "all")
    refit.trainer.max_epochs = epochs
    for name, node in (cfg.get("callbacks") or {}).items():
        if node and node.get("monitor"):
            refit.callbacks[name] = None
    return refit


def _fold_metrics(parent: RunHandle, run_ids: list[str], monitor: str) -> list[dict[str, float]]:
    """Each fold's monitored validation value at its best epoch, best epoch and test metrics, read back from MLflow."""
    rows = []
    for run_id in run_ids:
        run = parent.store.get_run(run_id)
        best = run.data.tags.get("best_epoch", "None")
        row = {monitor: parent.store.run_value(run, monitor), "best_epoch": None if best == "None" else float(best)}
        row.update({k: v for k, v in run.data.metrics.items() if k.startswith("test/")})
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for row in rows for k in row})
    summary: dict[str, float] = {}
    for key in keys:
        mean, std = mean_std([row[key] for row in rows if key in row])
        summary[f"{key}_mean"] = mean
        if not math.isnan(std):
            summary[f"{key}_std"] = std
    return summary


def _print(rows: list[dict[str, float]], summary: dict[str, float], monitor: str) -> None:
    from rich.table import Table

    keys = [monitor, *(k for k in ("test/acc", "test/f1_macro") if k in rows[0])]
    table = Table(title=f"cross-validation: {len(rows)} folds")
    for name in ("fold", *keys):
        table.add_column(name, justify="right")
    for i, row in enumerate(rows):
        table.add_row(str(i), *(f"{row.get(k, math.nan):.4f}" for k in keys))
    table.add_row("mean ± std", *(f"{summary[f'{k}_mean']:.4f} ± {summary.get(f'{k}_std', math.nan):.4f}" for k in keys))
    console.print(table)


def _study_name(cfg: DictConfig) -> str:
    """The parent's run name: what its children are named after (a runner task's runs by their estimator)."""
    if cfg.get("run_name") or not cfg.task.get("runner"):
        return default_run_name(cfg)
    target = (cfg.task.get("estimator") or {}).get("_target_") or cfg.task.runner
    return f"{cfg.data.name}-{str(target).rsplit('.', 1)[-1]}-seed{cfg.seed}"


def cross_validate(cfg: DictConfig, out_dir: Path, root: Path, test_refit: bool = True,
                   tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``cfg`` once per fold of its resampling split (then refit if asked); returns what ``train_and_test``
    returns, with the parent's run id and the mean fold score as ``best_value`` (what a sweep optimises).

    Fold ``i``'s files are in ``out_dir / f"fold_{i}"``; with refit, the result carries ``refit_run_id`` and the
    refit's files are in ``out_dir / REFIT``.
    ``test_refit=False`` leaves that model untested (the DVC ``evaluate`` stage tests it). ``tags`` go on the
    parent and every child.
    """
    n = fold_count(cfg, root)
    refit = bool(cfg.split.get("refit", False))
    folds = [with_fold(cfg, i) for i in range(n)]
    if refit:
        refit_config(cfg, 1)  # a scheduler that cannot refit is reported before any fold trains
    check_build(folds[0], root)
    config = to_plain(cfg)
    name = f"{_study_name(cfg)}-{cfg.split.get('name', 'cv')}{n}"
    extra = dict(tags or {})
    own = {"role": "crossval", "config_hash": config_hash(config), **extra}
    with study_parent(cfg, root, name, config, own, reopen=lambda r: r.info.status != "FINISHED") as parent:
        done = parent.finished_children()
        run_ids, monitor = [], str(cfg.task.get("monitor", "val/loss"))
        for i, fold_cfg in enumerate(folds):
            previous = done.get(config_hash(to_plain(fold_cfg)))
            if previous is not None:
                console.print(f"fold {i}: already finished in MLflow run {previous.info.run_id}")
                run_ids.append(previous.info.run_id)
                continue
            result = run_task(fold_cfg, out_dir / f"fold_{i}", root, do_test=False if refit else None,
                              context=RunContext(child_tags(parent, **extra, fold=str(i)), quiet=True))
            run_ids.append(result["run_id"])
            monitor = result["monitor"]
            value = result.get("best_value")
            console.print(f"fold {i}/{n}: {monitor} {'-' if value is None else f'{value:.4f}'} (run {result['run_id']})",
                          highlight=False)
        rows = _fold_metrics(parent, run_ids, monitor)
        summary = _summary(rows)
        summary["folds"] = n
        final: dict[str, Any] = {k.removesuffix("_mean"): v for k, v in summary.items() if k.startswith("test/")
                                 and k.endswith("_mean")}
        refitted: dict[str, Any] = {}
        if refit:
            best = summary.get("best_epoch_mean")  # None for a task without epochs (a runner task)
            epochs = cfg.trainer.max_epochs if best is None else max(1, round(best))  # best epochs count from 1
            result = run_task(refit_config(cfg, epochs), out_dir / REFIT, root, do_test=test_refit,
                              context=RunContext(child_tags(parent, **extra, fold="all", refit="true")))
            final = {k: v for k, v in result.items() if k.startswith("test/")}
            summary.update({f"refit/{k}": v for k, v in final.items()})
            if best is not None:
                summary["refit_epochs"] = epochs
            parent.set_tags({"refit_run_id": result["run_id"]})
            refitted = {"refit_run_id": result["run_id"]}
        parent.log_metrics(summary)
        folder = out_dir / "crossval"
        write_json({"folds": [{"run_id": rid, **row} for rid, row in zip(run_ids, rows, strict=True)], "summary": summary},
                   folder / "crossval.json")
        parent.log_artifacts(folder, "crossval")
    _print(rows, summary, monitor)
    return {"run_id": parent.run_id, "monitor": monitor, "best_value": summary.get(f"{monitor}_mean"), "best_epoch": None,
            "folds": n, **final, **refitted}
