"""Per-epoch learning curves: MLflow metrics with the epoch as x-axis, and a CSV for ``dvc plots``.

Lightning's loggers plot against the global step; researchers read
early-stopping curves per epoch, so this callback logs once per epoch with
``step=epoch`` and keeps the best epoch of the monitored metric.

Epochs reach MLflow in batches, at most every ``flush_seconds`` (and always when
training ends or fails): one MLflow write costs 20-30 ms on the SQLite store, as
much as a whole epoch of the default model on digits (benches/overhead.py), while
an epoch of a real workload takes longer than ``flush_seconds``, so its curve
still updates live, every epoch.

Its rows live in the checkpoint (``state_dict``), so a resumed run neither loses
nor repeats an epoch: epochs the checkpoint holds but MLflow does not (trained
just before a SIGKILL, not yet flushed) are logged when training resumes, and an
epoch MLflow already holds (logged just before a kill, then re-trained) is not
logged twice.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl

FLUSH_SECONDS = 2.0
CSV_NAME = "curves.csv"


class EpochSink(Protocol):
    """Where epochs are logged (the run's MLflow handle; None: the CSV only)."""

    def log_epochs(self, rows: list[dict[str, float]]) -> None: ...


class EpochCurves(pl.Callback):
    """``folder/curves.csv`` and, once the run layer sets ``tracker``, the run's MLflow curves."""

    def __init__(self, folder: Path, monitor: str, mode: str, tracker: EpochSink | None = None,
                 flush_seconds: float = FLUSH_SECONDS):
        self.csv_path = Path(folder) / CSV_NAME
        self.tracker = tracker
        self.monitor, self.mode = monitor, mode
        self.flush_seconds = flush_seconds
        self.rows: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.logged_steps: set[int] = set()
        self.last_flush = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_flush = time.monotonic()
        self.flush()  # a resumed run's epochs that never reached MLflow

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        epoch = trainer.current_epoch + 1  # epochs trained: Optuna's step, best_epoch and the curves all count from 1
        self._track_best(metrics.get(self.monitor), epoch)
        self.rows.append({"epoch": epoch, **metrics})
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()
        if trainer.is_global_zero:  # every rank keeps the rows (they are in its checkpoint state); one writes them
            self._write_csv()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.flush()  # a failed, pruned or interrupted run keeps every epoch it trained

    def flush(self) -> None:
        """Log, in one MLflow write, every epoch not logged yet."""
        pending = [row for row in self.rows if row["epoch"] not in self.logged_steps]
        if self.tracker is None or not pending:
            return
        self.tracker.log_epochs(pending)
        self.logged_steps.update(row["epoch"] for row in pending)
        self.last_flush = time.monotonic()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "best_epoch": self.best_epoch, "best_value": self.best_value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.best_epoch, self.best_value = state_dict["best_epoch"], state_dict["best_value"]

    def _track_best(self, value: float | None, epoch: int) -> None:
        if value is None or math.isnan(value):
            return
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if better:
            self.best_value, self.best_epoch = value, epoch

    def _write_csv(self) -> None:
        fields = sorted({k for row in self.rows for k in row} - {"epoch"})
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", *fields])
            writer.writeheader()
            writer.writerows(self.rows)
