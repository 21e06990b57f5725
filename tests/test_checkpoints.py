"""The resumable checkpoint is not written twice: each epoch end saves the best or the last file, and the newer
one always holds the latest epoch."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from labline.runs import resume
from labline.runs.assembly import prepare_run
from testroot import ROOT

FAST = ["+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false", "callbacks=none", "threads=1"]


class FileProbe(pl.Callback):
    """Modification times of both checkpoint files at each epoch's start and at the end of training,
    i.e. after the previous epoch's checkpoint callbacks ran."""

    def __init__(self, folder) -> None:
        self.folder, self.seen = folder, []

    def _look(self) -> None:
        self.seen.append({name: (p.stat().st_mtime_ns if (p := resume.checkpoint_file(self.folder, name)).exists() else None)
                          for name in (resume.BEST, resume.LAST)})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._look()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._look()


def test_each_epoch_saves_exactly_one_file_and_the_newest_resumes_the_last_epoch(compose, tmp_path) -> None:
    # A high learning rate makes val/acc go down as well as up, so both files get written.
    probe = FileProbe(tmp_path)
    run = prepare_run(compose(*FAST, "trainer.max_epochs=6", "optimizer.lr=0.05"), tmp_path, ROOT, extra_callbacks=[probe])
    run.curves.tracker = None
    run.trainer.fit(run.task, datamodule=run.datamodule)
    changed = [{name for name in before if after[name] != before[name]}
               for before, after in zip(probe.seen, probe.seen[1:], strict=False)]
    assert len(changed) == 6 and all(len(saved) == 1 for saved in changed), changed
    assert {resume.BEST} in changed and {resume.LAST} in changed, "both kinds of epoch occur in this run"
    improved = [e for e, saved in enumerate(changed) if saved == {resume.BEST}]
    assert improved == [e for e, row in enumerate(run.curves.rows)
                        if row["val/acc"] > max((r["val/acc"] for r in run.curves.rows[:e]), default=-1.0)]
    latest = torch.load(resume.latest_checkpoint(tmp_path), weights_only=False)
    assert latest["global_step"] == run.trainer.global_step and latest["epoch"] == 5
