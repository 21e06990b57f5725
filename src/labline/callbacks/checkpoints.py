"""A run's two checkpoints: the best epoch (the model that is kept and tested) and the resumable last epoch.

Both live in ``<run folder>/checkpoints/`` under fixed names (``checkpoint_file``), are written at the end of
the training epoch (after the curves callback has logged it, so its rows are in the file), and hold the full
training state: weights, optimizer, loops and every callback's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

FOLDER = "checkpoints"
BEST = "model"
LAST = "last"


def checkpoint_file(run_folder: Path, name: str) -> Path:
    """Where a run's checkpoint ``name`` (``LAST`` or ``BEST``) lives."""
    return run_folder / FOLDER / f"{name}.ckpt"


class BestCheckpoint(ModelCheckpoint):
    """``model.ckpt``: the epoch at which the task's monitored metric was best."""

    def __init__(self, folder: Path, monitor: str, mode: str, **kwargs: Any):
        super().__init__(dirpath=Path(folder) / FOLDER, filename=BEST, monitor=monitor, mode=mode, save_top_k=1,
                         enable_version_counter=False, save_on_train_epoch_end=True, **kwargs)


class ResumableCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every ``every_n_epochs``-th epoch, except an epoch the best checkpoint has
    just saved: its file holds the same full state (this callback's own state names only its fixed file), and
    one save costs 10-20 ms, as much as a few training steps of the default model (benches/overhead.py), so
    early epochs, which mostly improve, would pay twice. Resuming takes whichever of the two files is newer.
    """

    def __init__(self, folder: Path, every_n_epochs: int = 1, **kwargs: Any):
        super().__init__(dirpath=Path(folder) / FOLDER, filename=LAST, every_n_epochs=every_n_epochs, save_top_k=1,
                         enable_version_counter=False, save_on_train_epoch_end=True, **kwargs)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # ModelCheckpoint records the global step of its last save (private, stable across Lightning 2.x);
        # Lightning runs checkpoint callbacks in the order given, so the best one has already saved or not.
        best = next((c for c in trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)), None)
        if best is not None and best._last_global_step_saved == trainer.global_step and best.best_model_path:
            self._last_global_step_saved = trainer.global_step
            return
        super()._save_checkpoint(trainer, filepath)
