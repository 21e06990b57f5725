"""Semi-supervised tasks, DINO and LabelSpreading on tiny budgets: in-process runs recorded in MLflow with their
labeled / unlabeled tags, then a sweep, an ablation and the DVC stages through the real CLI in a project copy."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from project_copy import run_cli

from labline.data.semi import labeled_tags, load_training_data
from labline.runs.dispatch import run_task
from labline.tracking.store import tracking_uri

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "threads=1", "trainer.enable_progress_bar=false"]
FEW = ["data.labels_per_class=2", "seed=0"]


@pytest.mark.parametrize("experiment", ["semi_fixmatch_digits", "semi_pseudo_label_digits", "semi_mean_teacher_digits",
                                        "semi_supervised_digits", "semi_label_spreading_digits", "dino_digits"])
def test_each_task_records_the_same_labeled_set(compose, tmp_path, experiment: str) -> None:
    cfg = compose(f"experiment={experiment}", *FEW, *TINY, f"logger.experiment_name={experiment}")
    result = run_task(cfg, tmp_path / "out", tmp_path)
    client = MlflowClient(tracking_uri())
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["test/acc"] <= 1.0
    tags = run.data.tags
    # 2 labels x 10 classes of the training part, the rest of it unlabeled: what the supervised baseline records
    base = "dino_digits" if experiment == "dino_digits" else "semi_supervised_digits"  # DINO keeps SimCLR's split
    reference = labeled_tags(load_training_data(compose(f"experiment={base}", *FEW), tmp_path))
    assert tags["labeled_count"] == "20" and int(tags["unlabeled_count"]) > 1000 and tags["labels_hash"]
    assert {k: tags[k] for k in reference} == reference
    if experiment.startswith(("semi_fixmatch", "semi_pseudo", "semi_mean")):
        assert "train/mask_rate" in run.data.metrics and "train/loss_unlabeled" in run.data.metrics
    if experiment == "dino_digits":
        assert {"train/teacher_entropy", "train/teacher_student_kl", "test/knn_acc"} <= set(run.data.metrics)


def test_sweep_ablation_and_dvc_stages_run_the_new_tasks(project) -> None:
    sweep = run_cli(project, "labline", "train", "-m", "experiment=semi_fixmatch_digits", "hparams_search=digits_cnn",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=semi", *FEW, *TINY, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    trials = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.optuna_study = 'semi'")
    trained = [r for r in trials if "labels_hash" in r.data.tags]
    assert len(trained) == 2 and all(r.info.status == "FINISHED" for r in trained)
    ablation = run_cli(project, "labline", "ablate", "ablation=dino_parts", "seeds=[0]", *TINY, timeout=600)
    assert ablation.returncode == 0, ablation.stdout[-3000:] + ablation.stderr[-3000:]
    table = (project / "reports" / "ablation" / "dino_parts" / "table.csv").read_text()
    assert all(v in table for v in ("full", "no_centering", "no_sharpening", "no_multi_crop", "no_ema_teacher"))
    assert run_cli(project, "labline", "params", "experiment=semi_fixmatch_digits", *FEW, *TINY).returncode == 0
    (project / "dvc.lock").unlink()  # it records the default pipeline's data, not this split's
    for stage in ("prepare", "split", "preprocess", "train", "evaluate"):
        done = run_cli(project, "labline", "stage", stage)
        assert done.returncode == 0, (stage, done.stderr[-3000:])
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    recorded = json.loads((project / "models" / "run.json").read_text())
    run = client.get_run(recorded["run_id"])
    assert 0.0 <= metrics["test/acc"] <= 1.0 and run.data.tags["labeled_count"] == "20"
