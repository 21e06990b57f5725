"""Train and test one configured experiment.

Everything a user can get wrong is built and checked in ``prepare_run``
(data, model, optimizer, trainer) before the MLflow run exists; only then
does ``train_and_test`` open the run. A crash inside it marks the run FAILED,
a signal KILLED (with a resumable checkpoint), and SIGKILL leaves an in-flight
record that the next identical command resumes from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from labline import plots, report, resume
from labline.building import build
from labline.callbacks.checkpoints import ResumableCheckpoint
from labline.callbacks.epoch_curves import EpochCurves
from labline.callbacks.epoch_seed import EpochSeed
from labline.callbacks.guards import NonFiniteGuard
from labline.config import to_plain
from labline.data.datamodule import ArrayDataModule
from labline.data.files import write_json
from labline.data.stages import ProcessedData, load_processed
from labline.errors import ConfigError
from labline.interrupts import Interrupted, graceful_signals
from labline.metrics.complexity import model_complexity
from labline.models.build import build_task
from labline.predictions import log_predictions, log_validation_predictions, part_index, task_probabilities

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


MAX_THREADS_ENV = "LABLINE_MAX_THREADS"


def setup_runtime(cfg: DictConfig) -> None:
    """Threads first (a contended core makes steps 10-20x slower), then every RNG."""
    threads = cfg.get("threads", 2)
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError("threads", f"must be a positive integer, got {threads!r}", "1 .. number of cores")
    # A ceiling set from outside by whoever shares the cores out (parallel test workers, a batch
    # scheduler): the config stays what the user wrote, the process never oversubscribes its share.
    ceiling = os.environ.get(MAX_THREADS_ENV, "")
    torch.set_num_threads(min(threads, int(ceiling)) if ceiling.isdigit() and int(ceiling) > 0 else threads)
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


def split_hash(data: ProcessedData, datamodule: Any = None) -> str:
    """Identifies the test split: runs with equal hashes were tested on the same samples.

    A datamodule that regroups the samples (bags of instances) adds its ``test_signature()``: two MIL
    runs over the same test instances but different bags were not tested on the same examples."""
    signature = getattr(datamodule, "test_signature", lambda: b"")()
    return hashlib.sha256(data.fingerprint.encode() + data.parts["test"].tobytes() + signature).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """Identifies a resolved config (run name excluded): equal hashes mean the same experiment."""
    keyed = {k: v for k, v in config.items() if k != "run_name"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_run(cfg: DictConfig, out_dir: Path, root: Path, extra_callbacks: Sequence[pl.Callback] = ()) -> PreparedRun:
    setup_runtime(cfg)
    config = to_plain(cfg)
    data = load_processed(cfg, root)
    for key in ("batch_size", "num_workers"):
        value, least = cfg.data.get(key), 1 if key == "batch_size" else 0
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"data.{key}", f"must be an integer >= {least}, got {value!r}")
    # A task may bring its own datamodule (episodes, bags, paired views) over the same processed data.
    module_node = cfg.task.get("datamodule") or OmegaConf.create({"_target_": "labline.data.datamodule.ArrayDataModule"})
    augment = build(cfg.augment, "augment") if "_target_" in (cfg.get("augment") or {}) else None
    dm = build(module_node, "task.datamodule", _partial_=True)(
        data=data, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.seed, augment=augment)
    task = build_task(cfg, dm.input_shape, dm.num_classes, config)
    tracker = build(cfg.logger, "logger")
    curves = EpochCurves(out_dir / "curves.csv", tracker, monitor=task.monitor, mode=task.monitor_mode)
    every = cfg.get("checkpoint_every_n_epochs", 1)
    if not isinstance(every, int) or every < 1:
        raise ConfigError("checkpoint_every_n_epochs", f"must be a positive integer, got {every!r}")
    # Both checkpoints are written at the end of the training epoch, after EpochCurves has logged it (the
    # resumable one only when the best one did not just save the same state).
    folder = resume.checkpoint_file(out_dir, resume.BEST).parent
    best = pl.callbacks.ModelCheckpoint(dirpath=folder, filename=resume.BEST, monitor=task.monitor,
                                        mode=task.monitor_mode, save_top_k=1, enable_version_counter=False,
                                        save_on_train_epoch_end=True)
    last = ResumableCheckpoint(best, dirpath=folder, filename=resume.LAST, every_n_epochs=every,
                               save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)
    guard = NonFiniteGuard(cfg.get("nonfinite", "stop"))
    extra = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items() if node]
    trainer = build(cfg.trainer, "trainer", callbacks=[EpochSeed(cfg.seed), guard, curves, best, last, *extra, *extra_callbacks],
                    logger=False, default_root_dir=str(out_dir), enable_model_summary=False)
    return PreparedRun(cfg, config, data, dm, task, trainer, curves, tracker, out_dir, root)


def run_tags(run: PreparedRun) -> dict[str, str]:
    """Provenance and model complexity (FLOPs of one sample, 2 x MACs), recorded once per run."""
    complexity = model_complexity(run.task, run.datamodule.input_shape)
    return {**{f"model.{k}": str(v) for k, v in complexity.items()},
            "seed": str(run.cfg.seed), "dataset": run.cfg.data.name, "data_md5": run.data.md5,
            "data_fingerprint": run.data.fingerprint, "split_hash": split_hash(run.data, run.datamodule),
            "config_hash": config_hash(run.config)}


def _interrupt_checkpoint(run: PreparedRun) -> None:
    """On SIGINT/SIGTERM, keep a resumable checkpoint of the last completed epoch."""
    if resume.latest_checkpoint(run.out_dir) is None:  # else resume from the last epoch end, not mid-epoch
        run.trainer.save_checkpoint(resume.checkpoint_file(run.out_dir, resume.LAST))


def fit(run: PreparedRun, resume_from: Path | None = None) -> Path:
    """Train (or resume); returns the best checkpoint. Records curves, best/stopped epoch and the checkpoint."""
    with graceful_signals():
        try:
            run.trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=str(resume_from) if resume_from else None,
                            weights_only=False)
        except Interrupted:
            _interrupt_checkpoint(run)
            raise
    best = Path(run.trainer.checkpoint_callback.best_model_path or resume.checkpoint_file(run.out_dir, resume.BEST))
    if not best.exists():
        run.trainer.save_checkpoint(best)
    curve_png = plots.learning_curves(run.curves.rows, run.out_dir / "learning_curves.png", run.curves.best_epoch)
    guard = next(c for c in run.trainer.callbacks if isinstance(c, NonFiniteGuard))
    run.tracker.set_tags({"best_epoch": run.curves.best_epoch, "stopped_epoch": run.trainer.current_epoch - 1,
                          "skipped_batches": guard.skipped})
    run.tracker.log_artifact(curve_png, "plots")
    run.tracker.log_artifact(run.curves.csv_path, "curves")
    if run.tracker.log_checkpoint:
        run.tracker.log_artifact(best, "checkpoints")
    return best


def test(run: PreparedRun, checkpoint: Path, reports: Path) -> dict[str, float]:
    """Evaluate the checkpoint on the test split once; write metrics (and what the task adds) to reports/ and MLflow."""
    results = run.trainer.test(run.task, datamodule=run.datamodule, ckpt_path=str(checkpoint), verbose=False)[0]
    metrics = {METRIC_NAMES.get(k, k.replace("/", "_")): float(v) for k, v in results.items()}
    write_json(metrics, reports / "metrics.json")
    run.tracker.log_metrics(metrics)
    found = task_probabilities(run.task)
    if found is not None:
        classes = getattr(run.datamodule, "classes", run.data.classes)  # a bag datamodule's classes are the bags'
        classification_reports(run.tracker, classes, *found, part_index(run.datamodule, "test"), reports)
    # Tasks with outputs of their own (attention maps, episode accuracies, ...) return files to keep.
    for path in getattr(run.task, "test_artifacts", lambda folder: [])(reports):
        run.tracker.log_artifact(Path(path), "test")
    return metrics


def classification_reports(tracker: Any, classes: list[str], probs: np.ndarray, targets: np.ndarray, index: np.ndarray,
                           reports: Path) -> None:
    """Confusion matrix (JSON, PNG), per-sample predictions for ``dvc plots``, probabilities for ensembles.

    What every classifier records at test, whatever produced its probabilities (a Lightning task, a
    scikit-learn estimator, an ensemble of runs), so that all of them can be compared and combined.
    """
    from sklearn.metrics import confusion_matrix

    predicted = probs.argmax(1)
    matrix = confusion_matrix(targets, predicted, labels=list(range(len(classes))))
    write_json({"classes": classes, "matrix": matrix.tolist()}, reports / "confusion_matrix.json")
    cm_png = plots.confusion_matrix(matrix, classes, reports / "confusion_matrix.png")
    rows = [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(targets, predicted, strict=True)]
    write_json(rows, reports / "predictions.json")
    tracker.log_artifact(cm_png, "plots")
    tracker.log_dict({"classes": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")
    log_predictions(tracker, "test", probs, targets, index)


def train_and_test(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
                   extra_callbacks: Sequence[pl.Callback] = (), tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole ``labline train`` job: build, open the MLflow run, fit, test once.

    Sweeps and ablations call this in-process, passing callbacks (e.g. a pruner) and
    tags; with ``do_test=False`` (or ``test_after_fit: false``) the test split stays untouched.
    If the same config was interrupted earlier (SIGKILL, SIGINT, SIGTERM), it resumes from
    that run's last checkpoint into the same MLflow run.
    Returns the run id, the monitored validation value at the best epoch and any test metrics.
    """
    do_test = bool(cfg.get("test_after_fit", True)) if do_test is None else do_test
    # The resume key is the config and the run's context (sweep study and trial, ablation variant, ...): a sweep
    # trial must never resume a killed run of another study, or a standalone run, that had the same config.
    chash = config_hash({**to_plain(cfg), "context": dict(tags)} if tags else to_plain(cfg))
    previous, orphan = resume.find(root, chash) if cfg.get("resume", True) else (None, None)
    if previous is not None:
        out_dir = previous.out_dir
        report.console.print(f"[bold yellow]resuming[/] MLflow run {previous.run_id} from {previous.checkpoint}")
    run = prepare_run(cfg, out_dir, root, extra_callbacks)
    report.config_tree(run.config)
    if orphan:
        run.tracker.mark_killed(orphan)
    run_id = previous.run_id if previous else None
    with run.tracker.start(default_run_name(cfg), run.config, {**run_tags(run), **(tags or {})}, root, run_id=run_id):
        if previous is not None:
            run.curves.logged_steps = run.tracker.logged_steps("val/loss")
        resume.mark(root, chash, out_dir, run.tracker.run_id)
        try:
            best = fit(run, previous.checkpoint if previous else None)
            metrics = test(run, best, out_dir) if do_test else {}
            # Validation is not the test split: its probabilities (one more pass of the best checkpoint) are
            # saved once, right after training, for ensembles to fit weights on; the DVC evaluate stage,
            # which tests the same run later, does not repeat them.
            log_validation_predictions(run, best)
        except Interrupted:
            raise
        except BaseException:
            resume.clear(root, chash)
            raise
        resume.clear(root, chash)
        write_json({"run_id": run.tracker.run_id, "checkpoint": str(best.relative_to(out_dir))}, out_dir / "run.json")
    if metrics:
        report.metrics_table(metrics)
    return {"run_id": run.tracker.run_id, "monitor": run.task.monitor, "best_value": run.curves.best_value,
            "best_epoch": run.curves.best_epoch, **metrics}


def train_job(cfg: DictConfig, out_dir: Path, root: Path) -> dict[str, Any]:
    """What one ``labline train`` job runs (each job of a ``-m`` sweep too): every fold of a resampling
    split (``crossval``), else one run of the task (``run_task``)."""
    from labline.data.stages import is_resampling
    from labline.sweep.context import trial_hooks

    if is_resampling(cfg) and cfg.split.get("fold") is None:
        from labline.crossval import cross_validate

        return cross_validate(cfg, out_dir, root)
    callbacks, tags = trial_hooks()  # an Optuna trial's reporting/pruning callback and tags; none outside a sweep
    return run_task(cfg, out_dir, root, extra_callbacks=callbacks, tags=tags)


def run_task(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
             extra_callbacks: Sequence[pl.Callback] = (), tags: dict[str, str] | None = None) -> dict[str, Any]:
    """One run of any task, whoever trains it: the one place that tells Lightning tasks from runner tasks.

    A task whose config names a ``runner`` (e.g. scikit-learn baselines, which are not Lightning modules)
    is run by that function, called like ``train_and_test`` minus the Lightning callbacks (it has no
    trainer to attach them to): ``runner(cfg, out_dir, root, do_test=..., tags=...)``, returning what
    ``train_and_test`` returns. ``labline train``, cross-validation folds and ablation runs all come here.
    """
    runner = cfg.task.get("runner")
    if runner:
        from hydra.utils import get_object

        return get_object(runner)(cfg, out_dir, root, do_test=do_test, tags=tags)
    return train_and_test(cfg, out_dir, root, do_test=do_test, extra_callbacks=extra_callbacks, tags=tags)
