"""Every backbone option trains through the real ``labline train`` path on the bundled data.

One short epoch each (3 train batches): this proves the option composes,
builds on the datamodule's real input shape, trains, checkpoints, reloads for
the test split and is recorded in MLflow, not that it learns well.
"""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from labline.runs.lightning_run import train_and_test
from labline.tracking.store import tracking_uri
from testroot import CONF, ROOT

# Per-pixel backbones (a dense map, not a feature vector) train in tests/e2e/test_segmentation_cli.py.
DENSE = {"unet", "fcn"}
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml") if p.stem not in DENSE)
SHORT_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
             "+trainer.limit_test_batches=2", "threads=1", "logger.experiment_name=smoke", "trainer.enable_progress_bar=false"]
# Every option on the digits images; the 1-D dataset once (the unit tests cover (C, L) input for every sequence backbone).
CASES = [(name, "digits") for name in BACKBONES] + [("tcn", "digits_seq")]


@pytest.mark.parametrize(("name", "data"), CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_backbone_trains_one_epoch(compose, tmp_path, name, data):
    cfg = compose(f"backbone={name}", f"data={data}", *SHORT_RUN)
    metrics = train_and_test(cfg, tmp_path, ROOT)

    scores = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert {"test/acc", "test/loss"} <= set(scores)
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert all(0.0 <= v <= 1.0 for k, v in scores.items() if k != "test/loss"), scores
    run = MlflowClient(tracking_uri()).get_run(metrics["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone._target_"] == cfg.backbone._target_
    assert run.data.metrics["test/acc"] == pytest.approx(scores["test/acc"])
