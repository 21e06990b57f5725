"""Epoch curves reach MLflow in batches, every epoch exactly once, including across a resume."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from labline.callbacks.epoch_curves import EpochCurves
from labline.runs.assembly import prepare_run
from labline.runs.lightning_run import open_training_run
from labline.tracking.lifecycle import current_run, open_run
from labline.tracking.store import open_store, tracking_uri
from testroot import ROOT

FAST = ["trainer.max_epochs=3", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "callbacks=none", "threads=1",
        "logger.experiment_name=tests"]


def _history(run_id: str, key: str) -> list:
    return sorted(MlflowClient(tracking_uri()).get_metric_history(run_id, key), key=lambda m: m.step)


def test_short_epochs_are_logged_together_when_training_ends(compose, tmp_path) -> None:
    run = prepare_run(compose(*FAST), tmp_path, ROOT)
    run.curves.flush_seconds = 3600.0  # no epoch is long enough to flush on its own
    with open_training_run(run, "curves", {}) as handle:
        run.trainer.fit(run.task, datamodule=run.datamodule)
    history = _history(handle.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2, 3], "epochs count from 1, like Optuna's step"
    assert [m.value for m in history] == [row["val/loss"] for row in run.curves.rows]
    assert len({m.timestamp for m in history}) == 1  # one write for the three epochs


def test_slow_epochs_are_logged_as_they_end(compose, tmp_path) -> None:
    run = prepare_run(compose(*FAST), tmp_path, ROOT)
    run.curves.flush_seconds = 0.0
    seen: list[list[int]] = []
    with open_training_run(run, "curves", {}) as handle:
        tracker_log = handle.log_epochs
        handle.log_epochs = lambda rows: (seen.append([r["epoch"] for r in rows]), tracker_log(rows))
        run.trainer.fit(run.task, datamodule=run.datamodule)
    assert seen == [[1], [2], [3]]
    assert [m.step for m in _history(handle.run_id, "train/loss")] == [1, 2, 3]


def test_a_resumed_run_logs_the_epochs_its_checkpoint_holds_and_mlflow_lacks(tmp_path) -> None:
    store = open_store()
    rows = [{"epoch": e, "val/loss": 1.0 / e} for e in range(1, 4)]
    with open_run(store, "tests", "killed", config={}, root=ROOT) as tracker:
        tracker.log_epochs(rows[:1])  # the kill came after epoch 1's checkpoint, before its flush
    curves = EpochCurves(tmp_path, monitor="val/loss", mode="min", tracker=tracker)
    curves.load_state_dict({"rows": rows[:2], "best_epoch": 2, "best_value": 0.5})
    with open_run(store, "tests", "killed", run_id=tracker.run_id) as reopened:
        curves.tracker = reopened
        curves.logged_steps = reopened.logged_steps("val/loss")
        curves.on_train_start(None, None)
    assert [(m.step, m.value) for m in _history(tracker.run_id, "val/loss")] == [(1, 1.0), (2, 0.5)]
    assert current_run() is None
