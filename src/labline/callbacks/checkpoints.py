"""The resumable checkpoint, written only when the best-model checkpoint does not already hold the epoch."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class ResumableCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every ``every_n_epochs``-th epoch, except an epoch the ``best`` callback
    has just saved: its file holds the same full state (weights, optimizer, loops, every callback's state;
    this callback's own state names only its fixed file), and one save costs 10-20 ms, as much as a few
    training steps of the default model (benches/overhead.py), so early epochs, which mostly improve,
    would pay twice. ``resume.latest_checkpoint`` resumes from whichever of the two files is newer.
    """

    def __init__(self, best: ModelCheckpoint, **kwargs: Any):
        super().__init__(**kwargs)
        self.best = best

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # ModelCheckpoint records the global step of its last save (private, stable across Lightning 2.x);
        # Lightning runs checkpoint callbacks in the order given, so ``best`` has already saved or not.
        if self.best._last_global_step_saved == trainer.global_step and self.best.best_model_path:
            self._last_global_step_saved = trainer.global_step
            return
        super()._save_checkpoint(trainer, filepath)
