"""Per-epoch learning curves: MLflow metrics with the epoch as x-axis, and a CSV for ``dvc plots``.

Lightning's loggers plot against the global step; researchers read
early-stopping curves per epoch, so this callback logs once per epoch with
``step=epoch`` and keeps the best epoch of the monitored metric.

Its rows live in the checkpoint (``state_dict``), and checkpoints are written
after it logs (Lightning runs ModelCheckpoint last), so a resumed run neither
loses nor repeats an epoch: an epoch MLflow already holds (logged just before a
kill, then re-trained) is not logged twice.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class EpochCurves(pl.Callback):
    def __init__(self, csv_path: Path, tracker: Any | None, monitor: str, mode: str):
        self.csv_path = csv_path
        self.tracker = tracker
        self.monitor, self.mode = monitor, mode
        self.rows: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.logged_steps: set[int] = set()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        epoch = trainer.current_epoch
        self._track_best(metrics.get(self.monitor), epoch)
        self.rows.append({"epoch": epoch, **metrics})
        if self.tracker is not None and epoch not in self.logged_steps:
            self.tracker.log_metrics(metrics, step=epoch)
        self._write_csv()

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
