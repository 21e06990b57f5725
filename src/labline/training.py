"""Train and test one configured experiment.

Everything a user can get wrong is built and checked in ``prepare_run``
(data, model, optimizer, trainer) before the MLflow run exists; only then
does ``fit`` open the run. A crash inside it marks the run FAILED.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig

from labline import plots, report
from labline.building import build
from labline.callbacks.epoch_curves import EpochCurves
from labline.config import to_plain
from labline.data.datamodule import ArrayDataModule
from labline.data.files import write_json
from labline.data.stages import ProcessedData, load_processed
from labline.errors import ConfigError
from labline.models.build import build_task

CHECKPOINT_NAME = "model"
METRIC_NAMES = {"test/acc": "test_accuracy", "test/f1_macro": "test_f1_macro", "test/loss": "test_loss"}


@dataclass
class PreparedRun:
    cfg: DictConfig
    config: dict[str, Any]
    data: ProcessedData
    datamodule: ArrayDataModule
    task: pl.LightningModule
    trainer: pl.Trainer
    curves: EpochCurves
    tracker: Any
    out_dir: Path
    root: Path


def setup_runtime(cfg: DictConfig) -> None:
    """Threads first (a contended core makes steps 10-20x slower), then every RNG."""
    threads = cfg.get("threads", 2)
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError("threads", f"must be a positive integer, got {threads!r}", "1 .. number of cores")
    torch.set_num_threads(threads)
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", f"must be a non-negative integer, got {seed!r}")
    pl.seed_everything(seed, workers=True, verbose=False)


def default_run_name(cfg: DictConfig) -> str:
    if cfg.get("run_name"):
        return str(cfg.run_name)
    backbone = str(cfg.backbone.get("_target_", "model")).rsplit(".", 1)[-1]
    optimizer = str(cfg.optimizer.get("_target_", "opt")).rsplit(".", 1)[-1]
    return f"{cfg.data.name}-{backbone}-{optimizer}-seed{cfg.seed}"


def split_hash(data: ProcessedData) -> str:
    """Identifies the test split: runs with equal hashes were tested on the same samples."""
    return hashlib.sha256(data.fingerprint.encode() + data.parts["test"].tobytes()).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """Identifies a resolved config (run name excluded): equal hashes mean the same experiment."""
    keyed = {k: v for k, v in config.items() if k != "run_name"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_run(cfg: DictConfig, out_dir: Path, root: Path, extra_callbacks: Sequence[pl.Callback] = ()) -> PreparedRun:
    setup_runtime(cfg)
    config = to_plain(cfg)
    data = load_processed(cfg, root)
    dm = ArrayDataModule(data, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.seed,
                         augment=build(cfg.augment, "augment") if "_target_" in (cfg.get("augment") or {}) else None)
    task = build_task(cfg, dm.input_shape, dm.num_classes, config)
    tracker = build(cfg.logger, "logger") if cfg.get("logger") else None
    curves = EpochCurves(out_dir / "curves.csv", tracker, monitor=task.monitor, mode=task.monitor_mode)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", filename=CHECKPOINT_NAME, monitor=task.monitor,
                                              mode=task.monitor_mode, save_top_k=1, enable_version_counter=False)
    extra = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items() if node]
    trainer = build(cfg.trainer, "trainer", callbacks=[curves, checkpoint, *extra, *extra_callbacks], logger=False,
                    default_root_dir=str(out_dir), enable_model_summary=False)
    return PreparedRun(cfg, config, data, dm, task, trainer, curves, tracker, out_dir, root)


def run_tags(run: PreparedRun) -> dict[str, str]:
    return {"seed": str(run.cfg.seed), "dataset": run.cfg.data.name, "data_md5": run.data.md5,
            "data_fingerprint": run.data.fingerprint, "split_hash": split_hash(run.data),
            "config_hash": config_hash(run.config)}


def fit(run: PreparedRun) -> Path:
    """Train; returns the best checkpoint. Records curves, best/stopped epoch and the checkpoint."""
    run.trainer.fit(run.task, datamodule=run.datamodule)
    best = Path(run.trainer.checkpoint_callback.best_model_path or run.out_dir / "checkpoints" / f"{CHECKPOINT_NAME}.ckpt")
    if not best.exists():
        run.trainer.save_checkpoint(best)
    curve_png = plots.learning_curves(run.curves.rows, run.out_dir / "learning_curves.png", run.curves.best_epoch)
    if run.tracker is not None:
        run.tracker.set_tags({"best_epoch": run.curves.best_epoch, "stopped_epoch": run.trainer.current_epoch - 1})
        run.tracker.log_artifact(curve_png, "plots")
        run.tracker.log_artifact(run.curves.csv_path, "curves")
        if run.tracker.log_checkpoint:
            run.tracker.log_artifact(best, "checkpoints")
    return best


def test(run: PreparedRun, checkpoint: Path, reports: Path) -> dict[str, float]:
    """Evaluate the checkpoint on the test split once; write metrics, confusion matrix and predictions."""
    results = run.trainer.test(run.task, datamodule=run.datamodule, ckpt_path=str(checkpoint), verbose=False)[0]
    metrics = {METRIC_NAMES.get(k, k.replace("/", "_")): float(v) for k, v in results.items()}
    probs = torch.cat(run.task.test_probs).numpy()
    targets = torch.cat(run.task.test_targets).numpy()
    from sklearn.metrics import confusion_matrix

    predicted = probs.argmax(1)
    matrix = confusion_matrix(targets, predicted, labels=list(range(len(run.data.classes))))
    write_json(metrics, reports / "metrics.json")
    write_json({"classes": run.data.classes, "matrix": matrix.tolist()}, reports / "confusion_matrix.json")
    cm_png = plots.confusion_matrix(matrix, run.data.classes, reports / "confusion_matrix.png")
    rows = [{"actual": run.data.classes[a], "predicted": run.data.classes[p]} for a, p in zip(targets, predicted, strict=True)]
    write_json(rows, reports / "predictions.json")
    if run.tracker is not None:
        run.tracker.log_metrics(metrics)
        run.tracker.log_artifact(cm_png, "plots")
        run.tracker.log_dict({"classes": run.data.classes, "matrix": matrix.tolist()}, "confusion_matrix.json")
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(Path(tmp) / "test.npz", probs=probs, targets=targets, index=run.data.parts["test"])
            run.tracker.log_artifact(Path(tmp) / "test.npz", "predictions")
    return metrics


def train_and_test(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
                   extra_callbacks: Sequence[pl.Callback] = (), tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole ``labline train`` job: build, open the MLflow run, fit, test once.

    Sweeps and ablations call this in-process, passing callbacks (e.g. a pruner) and
    tags; with ``do_test=False`` (or ``test_after_fit: false``) the test split stays untouched.
    Returns the run id, the monitored validation value at the best epoch and any test metrics.
    """
    do_test = bool(cfg.get("test_after_fit", True)) if do_test is None else do_test
    run = prepare_run(cfg, out_dir, root, extra_callbacks)
    report.config_tree(run.config)
    metrics: dict[str, float] = {}
    if run.tracker is None:
        best = fit(run)
        metrics = test(run, best, out_dir) if do_test else {}
        run_id = None
    else:
        with run.tracker.start(default_run_name(cfg), run.config, {**run_tags(run), **(tags or {})}, root):
            best = fit(run)
            metrics = test(run, best, out_dir) if do_test else {}
            write_json({"run_id": run.tracker.run_id, "checkpoint": str(best)}, out_dir / "run.json")
        run_id = run.tracker.run_id
    if metrics:
        report.metrics_table(metrics)
    return {"run_id": run_id, "monitor": run.task.monitor, "best_value": run.curves.best_value,
            "best_epoch": run.curves.best_epoch, **metrics}


def train_job(cfg: DictConfig, out_dir: Path, root: Path) -> dict[str, Any]:
    """What one ``labline train`` job runs (each job of a ``-m`` sweep too)."""
    return train_and_test(cfg, out_dir, root)
