"""A callback that SIGKILLs its own process once, at a chosen point of training (tests/e2e/test_kill_resume.py).

It is given to `labline train` like any user callback (`+callbacks.kill._target_=killpoints.KillAt`, with this folder
on PYTHONPATH), so the command that is killed and the command that resumes are the same, as a user's would be; a
marker file makes it kill only the first time.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

POINTS = ("run_created", "before_first_checkpoint", "checkpoint_save", "mid_epoch")


class KillAt(pl.Callback):
    def __init__(self, point: str, marker: str, epoch: int = 1, batch: int = 2):
        assert point in POINTS, point
        self.point, self.marker, self.epoch, self.batch = point, Path(marker), epoch, batch

    def _kill(self) -> None:
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.point == "run_created":  # the MLflow run exists, nothing has trained
            self._kill()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        first = self.point == "before_first_checkpoint" and trainer.current_epoch == 0
        middle = self.point == "mid_epoch" and trainer.current_epoch == self.epoch
        if (first or middle) and batch_idx == self.batch:
            self._kill()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.point == "checkpoint_save" and trainer.current_epoch == self.epoch:  # while the state is being dumped
            self._kill()
