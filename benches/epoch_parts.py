"""Where labline's epoch goes: CPU time spent inside each part of its training path, per epoch.

Wraps the functions labline adds to a Lightning epoch (the task's per-epoch logging and its parts, the checkpoint
callbacks, the curves, the guard, the progress bar, the epoch reseeding) and the loader's batch fetch, trains the
default experiment (``benches/overhead.py``'s labline side, ``--try`` candidates included) and prints the CPU time
(``time.process_time``, every thread) each one took per epoch, largest first. Unlike the overhead ratios, which
differ by up to 0.15x between runs on a shared machine, a part's own time moves less with load, so it shows what a
change bought.

    python benches/epoch_parts.py [--epochs 12] [--threads 1] [--batch-size 64] [--set KEY=VALUE ...] [--try NAME ...]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torchmetrics
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from torch.utils.data import dataloader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labline.callbacks.epoch_curves import EpochCurves  # noqa: E402
from labline.callbacks.epoch_seed import EpochSeed  # noqa: E402
from labline.callbacks.guards import NonFiniteGuard  # noqa: E402
from labline.models.classification import ClassificationTask  # noqa: E402
from overhead import CANDIDATES, labline_epochs  # noqa: E402

SPENT: collections.Counter[str] = collections.Counter()


def _timed(owner: type, name: str, label: str | None = None) -> None:
    function = getattr(owner, name)
    label = label or f"{owner.__name__}.{name}"

    @functools.wraps(function)
    def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[label] += time.process_time() - start

    setattr(owner, name, timed)


PARTS = [(ClassificationTask, "_log_epoch"), (pl.LightningModule, "log_dict"), (ClassificationTask, "_flush"),
         (torchmetrics.MetricCollection, "compute"), (ModelCheckpoint, "on_train_epoch_end"),
         (pl.Trainer, "save_checkpoint"), (EpochCurves, "on_train_epoch_end"), (EpochCurves, "flush"),
         (NonFiniteGuard, "on_before_optimizer_step"), (NonFiniteGuard, "on_train_batch_end"),
         (EpochSeed, "on_train_epoch_start"), *((RichProgressBar, hook) for hook in (
             "on_train_batch_end", "on_train_batch_start", "on_validation_batch_end", "on_train_epoch_start",
             "on_validation_start", "on_validation_end", "on_validation_epoch_end")),
         (dataloader._SingleProcessDataLoaderIter, "_next_data", "loader: next batch")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--try", dest="candidates", nargs="*", default=[], choices=sorted(CANDIDATES))
    args = parser.parse_args()
    os.environ.setdefault("LABLINE_PROJECT_ROOT", tempfile.mkdtemp(prefix="labline-bench-"))
    for part in PARTS:
        _timed(*part)
    overrides = [f"trainer.max_epochs={args.epochs}", f"threads={args.threads}", f"data.batch_size={args.batch_size}",
                 "callbacks=none", "trainer.enable_progress_bar=true", "logger.experiment_name=bench", *args.set]
    with tempfile.TemporaryDirectory() as tmp:
        labline_epochs(overrides, Path(tmp) / "warm", args.candidates)  # imports, caches, the store's first touch
        SPENT.clear()
        epochs = labline_epochs(overrides, Path(tmp) / "timed", args.candidates)
    cpu = sorted(t[1] for t in epochs[1:])
    print(f"load {os.getloadavg()[0]:.1f}; median epoch CPU {cpu[len(cpu) // 2] * 1e3:.1f} ms; per epoch, nested parts "
          "included in their callers:")
    for label, seconds in SPENT.most_common():
        print(f"  {label:45s} {seconds / len(epochs) * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
