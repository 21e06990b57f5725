"""Train and test one configured Lightning task as one MLflow run.

Everything a user can get wrong is built and checked by ``prepare_run`` before the MLflow run exists; only
then does ``train_and_test`` open the run. A crash inside it marks the run FAILED, a signal KILLED (with a
resumable checkpoint), and SIGKILL leaves an in-flight record that the next identical command resumes from.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labline.callbacks.guards import NonFiniteGuard
from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.interrupts import Interrupted, graceful_signals
from labline.core.io import write_json
from labline.metrics.complexity import model_complexity
from labline.reporting import plots
from labline.reporting.console import config_tree, console, metrics_table, run_footer, run_header
from labline.runs import resume
from labline.runs.assembly import PreparedRun, prepare_run
from labline.runs.context import NO_CONTEXT, RunContext
from labline.runs.predictions import log_predictions, serving_as_test
from labline.runs.ranks import launching_ranks, topology_tags
from labline.runs.records import config_hash, data_tags, default_run_name, option_names
from labline.runs.reports import classification_reports
from labline.runs.runtime import runtime_tags
from labline.runs.shift import FOLDER as SHIFT_FOLDER
from labline.runs.shift import SHIFT_KEY, evaluate_shifts, load_weights
from labline.tracking.lifecycle import RunHandle, open_run

RUN_RECORD = "run.json"
BEST_PREFIX = "best/"


def run_tags(run: PreparedRun) -> dict[str, str]:
    """Provenance, model complexity (FLOPs of one sample, 2 x MACs) and the task's own tags, recorded once."""
    complexity = model_complexity(run.task, run.datamodule.input_shape)
    return {**{f"model.{k}": str(v) for k, v in complexity.items()}, **data_tags(run.cfg, run.data, run.datamodule),
            **runtime_tags(), "config_hash": config_hash(run.config), **topology_tags(run.trainer), **run.task.run_tags()}


@contextmanager
def open_training_run(run: PreparedRun, name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[RunHandle]:
    """The training's MLflow run (``run_id``: re-open it to resume or to test), its curves logged into it."""
    destination = run.destination
    with open_run(destination.store, destination.experiment_name, name, tags=tags, config=run.config, root=run.root,
                  run_id=run_id) as handle:
        run.curves.tracker = handle
        if run_id is not None:
            run.curves.logged_steps = handle.logged_steps("val/loss")
        yield handle


def _interrupt_checkpoint(run: PreparedRun) -> None:
    """On SIGINT/SIGTERM, keep a resumable checkpoint of the last completed epoch. Over several processes only the
    epoch-end ones: saving waits for every rank at a barrier, which ranks that stopped never reach."""
    if run.trainer.world_size > 1:
        return
    if resume.latest_checkpoint(run.out_dir) is None:  # else resume from the last epoch end, not mid-epoch
        run.trainer.save_checkpoint(resume.checkpoint_file(run.out_dir, resume.LAST))


def fit(run: PreparedRun, handle: RunHandle, resume_from: Path | None = None) -> Path:
    """Train (or resume); returns the best checkpoint. Records curves, best/stopped epoch and the checkpoint."""
    with graceful_signals(), launching_ranks(run.trainer, run.config, run.out_dir, run.root, resume_from):
        try:
            # weights_only: a checkpoint on shared storage is a file others can write; it must not run code.
            run.trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=str(resume_from) if resume_from else None,
                            weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ConfigError(str(resume_from), f"holds more than plain weights and state, refused (weights_only): "
                              f"{' '.join(str(exc).split())[:200]}", "a checkpoint labline wrote; delete it to start afresh"
                              ) from None
        except Interrupted:
            _interrupt_checkpoint(run)
            raise
    best = Path(run.trainer.checkpoint_callback.best_model_path or resume.checkpoint_file(run.out_dir, resume.BEST))
    if not best.exists():
        run.trainer.save_checkpoint(best)
    curve_png = plots.learning_curves(run.curves.rows, run.out_dir / "learning_curves.png", run.curves.best_epoch)
    guard = next((c for c in run.trainer.callbacks if isinstance(c, NonFiniteGuard)), None)
    handle.set_tags({"best_epoch": run.curves.best_epoch, "stopped_epoch": run.trainer.current_epoch,
                     **({"skipped_batches": guard.skipped} if guard is not None else {})})
    best_row = next((row for row in run.curves.rows if row["epoch"] == run.curves.best_epoch), {})
    # The run overview shows each curve's last value; the tested checkpoint is the best epoch's, so its
    # validation values are recorded apart: best/val/acc beside val/acc (the last epoch) and test/acc.
    handle.log_metrics({f"{BEST_PREFIX}{k}": v for k, v in best_row.items() if k.startswith("val/")})
    handle.log_artifact(curve_png, "plots")
    handle.log_artifact(run.curves.csv_path, "curves")
    if run.destination.log_checkpoint:
        handle.log_artifact(best, "checkpoints")
    return best


def test(run: PreparedRun, handle: RunHandle, checkpoint: Path, reports: Path) -> dict[str, float]:
    """Evaluate the checkpoint on the test split once; write metrics (and what the task adds) to reports/ and MLflow."""
    results = run.evaluator.test(run.task, datamodule=run.datamodule, ckpt_path=str(checkpoint), verbose=False,
                               weights_only=True)[0]
    metrics = {k: float(v) for k, v in results.items()}  # test/acc beside val/acc, as the task logs them
    metrics |= report_shifts(run, handle, "test", reports)  # the tested weights, on shifted test sets (DVC metrics too)
    write_json(metrics, reports / "metrics.json")
    handle.log_metrics(metrics)
    found = run.task.test_probabilities()
    if found is not None:
        classification_reports(handle, run.datamodule.classes, *found, run.datamodule.part_index("test"), reports)
    for path in run.task.test_artifacts(reports):
        handle.log_artifact(Path(path), "test")
    return metrics


def report_shifts(run: PreparedRun, handle: RunHandle, part: str, folder: Path) -> dict[str, float]:
    """The model in ``run.task`` scored on the run's shift families over ``part``; the files logged, the metrics
    returned for the caller to log with its own."""
    if not run.shifts:
        return {}
    report = evaluate_shifts(run.task, run.cfg, run.root, run.shifts, part, folder)
    for path in report.files:
        handle.log_artifact(path, SHIFT_FOLDER)
    run.shift_summary |= set(report.summary)
    return report.metrics


def console_metrics(run: PreparedRun, metrics: dict[str, float]) -> dict[str, float]:
    """What the console shows: every metric but the per-set shift scores (dozens; MLflow and metrics.json hold them)."""
    return {k: v for k, v in metrics.items() if f"/{SHIFT_KEY}/" not in k or k in run.shift_summary}


def log_validation_predictions(run: PreparedRun, handle: RunHandle, checkpoint: Path) -> None:
    """One pass of ``checkpoint`` (the best one) over the validation part, through the task's test step; logs
    ``predictions/val.npz``. Tasks without per-sample probabilities (few-shot episodes) and runs without a
    validation part log nothing."""
    if not run.task.per_sample_predictions:
        return
    index = run.datamodule.part_index("val")
    if len(index) == 0:
        return
    with serving_as_test(run.datamodule, "val"):
        run.evaluator.test(run.task, datamodule=run.datamodule, ckpt_path=str(checkpoint), verbose=False,
                           weights_only=True)
    found = run.task.test_probabilities()
    if found is not None:
        log_predictions(handle, "val", *found, index)


def train_and_test(cfg: DictConfig, out_dir: Path, root: Path, do_test: bool | None = None,
                   context: RunContext = NO_CONTEXT) -> dict[str, Any]:
    """The whole training of one config: build, open the MLflow run, fit, test once.

    Studies pass a ``context`` (callbacks such as a pruner, tags); with ``do_test=False`` (or
    ``test_after_fit: false``) the test split stays untouched. If the same config in the same context was
    interrupted earlier (SIGKILL, SIGINT, SIGTERM), it resumes from that run's last checkpoint into the same
    MLflow run. Returns the run id, the monitored validation value at the best epoch and any test metrics.
    """
    do_test = bool(cfg.get("test_after_fit", True)) if do_test is None else do_test
    # The resume key is the config and the run's context (sweep study and trial, ablation variant, ...): a sweep
    # trial must never resume a killed run of another study, or a standalone run, that had the same config.
    chash = config_hash({**to_plain(cfg), "context": dict(context.tags)} if context.tags else to_plain(cfg))
    previous, orphan = resume.find(root, chash) if cfg.get("resume", True) else (None, None)
    if previous is not None:
        out_dir = previous.out_dir
        console.print(f"[bold yellow]resuming[/] MLflow run {previous.run_id} from {previous.checkpoint}")
    run = prepare_run(cfg, out_dir, root, context.callbacks)
    if cfg.get("verbose", False):
        config_tree(run.config)
    if orphan:
        resume.close_orphan(run.destination.store, orphan)
    name = default_run_name(cfg, context.kind)
    if not context.quiet:
        run_header(name, f"{run.task.__class__.__name__} on {cfg.data.name}, up to {run.trainer.max_epochs} epochs",
                   run.destination.experiment_name, run.destination.store.uri)
    with open_training_run(run, name, {**run_tags(run), **context.tags},
                           run_id=previous.run_id if previous else None) as handle:
        if previous is None:
            handle.log_params(option_names(cfg))
        resume.mark(root, chash, out_dir, handle.run_id)
        try:
            start = previous.checkpoint if previous else context.start_from
            if previous is None and start is not None:
                handle.set_tags({"started_from_checkpoint": str(start)})
            best = fit(run, handle, start)
            metrics = test(run, handle, best, out_dir) if do_test else {}
            if not do_test and run.shifts and not cfg.get("test_after_fit", True):
                # a sweep's trial (the DVC train stage tests later instead): the best weights on shifted validation
                # sets, which a sweep may optimise; the test split stays untouched
                load_weights(run.task, best)
                metrics = report_shifts(run, handle, "val", out_dir)
                handle.log_metrics(metrics)
            # Validation is not the test split: its probabilities (one more pass of the best checkpoint) are
            # saved once, right after training, for ensembles to fit weights on; the DVC evaluate stage,
            # which tests the same run later, does not repeat them.
            log_validation_predictions(run, handle, best)
        except Interrupted:
            raise
        except BaseException:
            resume.clear(root, chash)
            raise
        resume.clear(root, chash)
        write_json({"run_id": handle.run_id, "checkpoint": str(best.relative_to(out_dir))}, out_dir / RUN_RECORD)
    if not context.quiet:
        if metrics:
            metrics_table(console_metrics(run, metrics))
        run_footer(handle.run_id)
    return {"run_id": handle.run_id, "monitor": run.task.monitor, "best_value": run.curves.best_value,
            "best_epoch": run.curves.best_epoch, **metrics}
