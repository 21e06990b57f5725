"""Per-epoch reporting from a training job to its Optuna trial, and pruning.

``optuna_integration.PyTorchLightningPruningCallback`` raises ``TrialPruned``
inside ``fit``; labline's MLflow run would record that as FAILED. This callback
asks the trainer to stop instead: the run ends FINISHED with a ``pruned`` tag,
and the sweeper tells Optuna PRUNED.

What is reported is chosen to match the pruners' arithmetic and the objective:

- the step is the number of epochs trained (1, 2, ...), the *resource* of
  successive halving and hyperband, so ``min_resource: 1`` judges a trial after
  its first epoch and rungs fall at epochs 1, 3, 9 (with Optuna's usual 0-based
  epoch, the first rung would cost two epochs and the last could fall on the
  final epoch, pruning a trial that has already trained to the end);
- the value is ``task.monitor`` at its best epoch so far, the same quantity the
  trial's objective (``best_value``) is at the end, so one noisy epoch does not
  prune a trial whose best epoch is as good as its rivals'.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from labline.callbacks.checkpoints import ResumableCheckpoint
from labline.tracking.lifecycle import current_run


class TrialReporter(pl.Callback):
    def __init__(self, trial: Any, prune: bool, measure_complexity: bool):
        self.trial = trial
        self.prune = prune  # Optuna cannot prune multi-objective studies
        self.measure_complexity = measure_complexity
        self.epochs = 0
        self.best: float | None = None
        self.pruned_epoch: int | None = None  # epochs trained when pruned, counted from 1 like every epoch labline reports
        self.measured: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = current_run()
        if run is not None:
            self.trial.set_user_attr("mlflow_run_id", run.run_id)
        # Where its checkpoints are: a retry of this trial, should its process die, continues from them.
        resumable = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ResumableCheckpoint)), None)
        if resumable is not None and resumable.dirpath:
            self.trial.set_user_attr("run_folder", str(Path(resumable.dirpath).parent))
        if self.measure_complexity:
            from labline.metrics.complexity import model_complexity

            self.measured = {k: float(v) for k, v in model_complexity(pl_module, trainer.datamodule.input_shape).items()}
            if run is not None:
                run.log_metrics({f"model/{k}": v for k, v in self.measured.items()})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(pl_module.monitor)
        if value is None:
            return
        self.epochs = trainer.current_epoch + 1
        value = float(value)
        if self.best is None or math.isnan(value) or math.isnan(self.best):
            self.best = value  # a NaN epoch is reported as NaN (pruners prune on it), not hidden by a better past
        else:
            self.best = (min if pl_module.monitor_mode == "min" else max)(self.best, value)
        if not self.prune:
            return
        self.trial.report(self.best, step=self.epochs)
        if self.trial.should_prune():
            self.pruned_epoch = self.epochs
            trainer.should_stop = True
            run = current_run()
            if run is not None:
                run.set_tags({"pruned": "true", "pruned_epoch": str(self.epochs)})
