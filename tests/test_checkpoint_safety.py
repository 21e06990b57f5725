"""Checkpoints load with ``weights_only=True``: one on shared storage is a file others can write, so a resume
(or a retried sweep trial continuing from it) must never execute what it unpickles."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from labline.core.errors import ConfigError
from labline.core.interrupts import Interrupted
from labline.runs import resume
from labline.runs.context import RunContext
from labline.runs.lightning_run import train_and_test
from testroot import ROOT

FAST = ["+trainer.limit_train_batches=3", "threads=1", "callbacks=none", "logger.experiment_name=safety",
        "trainer.max_epochs=3"]


class TermAt(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class SideEffect:
    """Unpickling this creates ``marker``: what a planted checkpoint would do with ``weights_only=False``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_is_refused_without_running_it(compose, tmp_path) -> None:
    cfg = compose(*FAST)
    with pytest.raises(Interrupted):
        train_and_test(cfg, tmp_path / "first", ROOT, context=RunContext(callbacks=[TermAt()]))
    checkpoint = resume.latest_checkpoint(tmp_path / "first")
    state = torch.load(checkpoint, weights_only=True)  # what labline wrote is plain data
    marker = tmp_path / "pwned"
    state["planted"] = SideEffect(marker)
    torch.save(state, checkpoint)

    with pytest.raises(ConfigError, match="weights_only") as refused:
        train_and_test(cfg, tmp_path / "second", ROOT)
    assert str(checkpoint) in str(refused.value)
    assert not marker.exists(), "the pickled code never ran"


def test_a_new_run_can_start_from_a_checkpoint(compose, tmp_path) -> None:
    """What a retried sweep trial does: a new run continuing from another run's checkpoint logs every epoch."""
    from mlflow.tracking import MlflowClient

    from labline.tracking.store import tracking_uri

    cfg = compose(*FAST)
    with pytest.raises(Interrupted):
        train_and_test(cfg, tmp_path / "first", ROOT, context=RunContext({"optuna_trial": "0"}, [TermAt()]))
    start = resume.latest_checkpoint(tmp_path / "first")
    result = train_and_test(cfg, tmp_path / "retry", ROOT, context=RunContext({"optuna_trial": "1"}, start_from=start))
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.data.tags["started_from_checkpoint"] == str(start)
    steps = sorted(m.step for m in MlflowClient(tracking_uri()).get_metric_history(result["run_id"], "val/loss"))
    assert steps == [1, 2, 3], "the epochs of the checkpoint and the new ones, once each"


@pytest.mark.parametrize(("override", "key"), [("backbone.weights", "backbone.weights"), ("task.teacher", "task.teacher")])
def test_a_planted_pickle_as_weights_or_teacher_is_refused_without_running_it(compose, tmp_path, override: str,
                                                                             key: str) -> None:
    """Starting weights and distillation teachers are files other people can write, as much as a resume point."""
    from labline.models.task import TaskContext, build_task
    from labline.runs.checkpoints import resolve_checkpoint

    marker = tmp_path / "pwned"
    planted = tmp_path / "planted.ckpt"
    torch.save({"state_dict": {"backbone.net.0.0.weight": torch.zeros(1)}, "hyper_parameters": SideEffect(marker)}, planted)
    base = ("experiment=distill_student_scratch", "task=distill") if key == "task.teacher" else ()
    cfg = compose(*base, *FAST, f"{override}={planted}")
    with pytest.raises(ConfigError) as refused:
        build_task(TaskContext(cfg, (1, 8, 8), 10, resolve_checkpoint=resolve_checkpoint))
    assert refused.value.key == key and "\n" not in str(refused.value)
    assert not marker.exists(), "the pickled code never ran"
