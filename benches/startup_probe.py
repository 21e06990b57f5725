"""A callback that writes the wall clock (``time.time()``) at the first training batch (benches/startup.py), given to
``labline train`` like any user callback: ``+callbacks.probe._target_=startup_probe.FirstStep +callbacks.probe.path=F``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class FirstStep(pl.Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.path.exists():
            self.path.write_text(repr(time.time()))
