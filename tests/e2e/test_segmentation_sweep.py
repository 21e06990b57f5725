"""`labline train -m hparams_search=segmentation_scenes`: the segmentation preset through the real CLI, Optuna,
Lightning and MLflow in a project copy, on a tiny budget (3 trials of 2 epochs over 16x16 scenes)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from project_copy import ROOT, run_cli

from labline.core.config import compose_config

pytestmark = pytest.mark.e2e

STUDY = "seg"
# no pruning: every trial completes, so each one's objective can be compared with its run's curve
TINY = ["hparams_search=segmentation_scenes", f"hydra.sweeper.study_name={STUDY}", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner.name=none", "trainer.max_epochs=2", "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2", "++data.source.n=120", "data.source.image_size=16", "threads=1",
        "logger.log_checkpoint=false"]


def test_segmentation_study_maximises_val_miou_and_writes_its_best_experiment(project: Path) -> None:
    result = run_cli(project, "labline", "train", "-m", *TINY, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{project / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(set(t.params) == {"optimizer.lr", "loss", "backbone.channels"} for t in study.trials)

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.optuna_study = '{STUDY}'")
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "optuna-study"]
    children = {int(r.data.tags["optuna_trial"]): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == [0, 1, 2]
    for trial in study.trials:
        run = children[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.params["task._target_"] == "labline.models.segmentation.SegmentationTask"
        assert run.data.params["backbone._target_"] == "labline.models.backbones.unet.UNet"
        curve = client.get_metric_history(run.info.run_id, "val/miou")
        assert sorted(m.step for m in curve) == [1, 2], "val/miou once per epoch"
        # the objective (best_value) is task.monitor at the trial's best epoch; the test split is never touched
        assert trial.value == pytest.approx(max(m.value for m in curve))
        assert not [k for k in run.data.metrics if k.startswith("test/")]

    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert "labline train experiment=seg_optuna_best" in result.stdout
    # written into the project copy's conf/, never the checkout's
    assert (project / "conf" / "experiment" / "seg_optuna_best.yaml").is_file()
    assert not (ROOT / "conf" / "experiment" / "seg_optuna_best.yaml").exists()
    rerun = compose_config(["experiment=seg_optuna_best"], conf=project / "conf")
    assert rerun.task._target_ == "labline.models.segmentation.SegmentationTask"
    assert rerun.optimizer.lr == best.params["optimizer.lr"]
    # a list option is an Optuna category by its text
    assert list(rerun.backbone.channels) == yaml.safe_load(best.params["backbone.channels"])
    expected_loss = compose_config([f"loss={best.params['loss']}"], conf=project / "conf").loss
    assert rerun.loss == expected_loss
    assert rerun.data.name == "scenes" and rerun.test_after_fit is True
