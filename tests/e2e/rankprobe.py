"""A callback that reports what each rank of a distributed training sees (tests/e2e/test_ddp.py).

Given to `labline train` like any user callback (`+callbacks.probe._target_=rankprobe.RankProbe`, with this folder on
PYTHONPATH): the other ranks build it from the same resolved config as rank zero. It writes `rank<N>.json` into
`folder` at the start of training and can put a NaN into one rank's batch, as a corrupt sample would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


class RankProbe(pl.Callback):
    def __init__(self, folder: str, poison_rank: int = -1, poison_step: int = 2):
        self.folder, self.poison_rank, self.poison_step = Path(folder), poison_rank, poison_step
        self.first: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else next(v for v in batch.values() if torch.is_tensor(v))
        if self.first is None:
            self.first = float(x.double().sum())
            self.folder.mkdir(parents=True, exist_ok=True)
            report = {"world_size": trainer.world_size, "pid": os.getpid(), "threads": torch.get_num_threads(),
                      "sync_batchnorm": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
                      "batchnorm": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()),
                      "train_batches": trainer.num_training_batches, "first_batch_sum": self.first}
            (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
        if trainer.global_rank == self.poison_rank and trainer.global_step == self.poison_step:
            x.view(-1)[0] = float("nan")
