"""Per-epoch reseeding, so an epoch's randomness depends only on (seed, epoch).

A run resumed from a checkpoint at epoch k then draws the same dropout masks
and augmentations for epoch k+1 as the uninterrupted run did, and ends with
identical metrics on CPU. Shuffling is seeded per epoch by the datamodule's
sampler (Lightning calls its ``set_epoch``), augmentation through the
datamodule's ``set_epoch``, called here.
"""

from __future__ import annotations

import lightning.pytorch as pl

from labline.core.seeding import epoch_seed
from labline.data.datamodule import DataModule


class EpochSeed(pl.Callback):
    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)
        if isinstance(trainer.datamodule, DataModule):
            trainer.datamodule.set_epoch(trainer.current_epoch)
