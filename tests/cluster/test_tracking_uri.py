"""`MLFLOW_TRACKING_URI` is honoured by every command and every process: a single training, its reproduction,
trained weights and a distillation teacher named by that run's id, cross-validation, an ensemble, a sweep with
two worker processes (parent and every trial), an ablation and a DVC experiment in a temporary workspace, against
a real MLflow server (artifacts through its proxied store); the training, the sweep's workers and the DVC
experiment also against another SQLite file. Nothing lands in the project's own `mlflow.db` or `mlartifacts/`."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from services import lab_env, ok, run

pytestmark = pytest.mark.e2e

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "threads=1", "trainer.enable_progress_bar=false"]


def _all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], "", max_results=1000)


def _all_runs_named(uri: str, experiment: str, name: str):  # noqa: ANN202 - an MLflow Run
    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  f"attributes.run_name = '{name}'")
    return found


@pytest.fixture(params=["sqlite", "server"])
def store(request, tmp_path_factory) -> tuple[str, Path | None]:
    """(tracking URI, the folder its artifacts must land in: the server's artifact store, or None for SQLite)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('elsewhere') / 'other.db'}", None
    lab = request.getfixturevalue("server_lab")
    return lab.tracking_uri, lab.folder / "mlflow" / "artifacts"


def test_every_command_records_in_the_users_store(project: Path, store: tuple[str, Path | None]) -> None:
    """Against the server every command runs; against a SQLite file elsewhere only those that leave this process or
    this folder (sweep workers, a DVC temp workspace) beside a plain training: the in-process commands resolve the
    URI as the training does, and each command is a process start (~20 s here)."""
    uri, artifacts = store
    everything = artifacts is not None
    env = lab_env(project, MLFLOW_TRACKING_URI=uri)
    experiment = f"uri-{'server' if everything else 'sqlite'}"
    named = f"logger.experiment_name={experiment}"
    single = ok(run(project, env, "labline", "train", *TINY, named, "run_name=single"))
    single_id = _all_runs_named(uri, experiment, "single").info.run_id
    if everything:  # commands that read a run back from the user's store: first, while the copy's tree is still clean
        ok(run(project, env, "labline", "reproduce", single_id))
        ok(run(project, env, "labline", "train", *TINY, named, "run_name=probe", "backbone.freeze=true",
               f"backbone.weights={single_id}"))
        ok(run(project, env, "labline", "train", *TINY, named, "run_name=student", "task=distill",
               f"task.teacher={single_id}"))
        ok(run(project, env, "labline", "train", *TINY, named, "run_name=cv", "split=kfold", "split.k=2"))
        ok(run(project, env, "labline", "ensemble", single_id, _all_runs_named(uri, experiment, "probe").info.run_id,
               "--method", "average"))
    sweep = ok(run(project, env, "labline", "train", "-m", "hparams_search=digits_cnn", *TINY, "test_after_fit=false",
                   f"logger.experiment_name={experiment}", f"hydra.sweeper.study_name={experiment}",
                   f"hydra.sweeper.storage=sqlite:///{project / (experiment + '.db')}", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.n_jobs=2"))
    assert "2 workers" in sweep.stdout
    if everything:
        ok(run(project, env, "labline", "ablate", "ablation=tiny", "seeds=1", "trainer.max_epochs=1",
               f"logger.experiment_name={experiment}"))
    ok(run(project, env, "dvc", "exp", "run", "--temp", "-S", "trainer.max_epochs=1", "-S", "threads=1",
           "-S", f"logger.experiment_name={experiment}"))

    runs = [r for r in _all_runs(uri) if MlflowClient(uri).get_experiment(r.info.experiment_id).name == experiment]
    by_name = {r.info.run_name: r for r in runs}
    assert "single" in by_name and by_name["single"].info.status == "FINISHED", single.stdout[-2000:]
    (parent,) = [r for r in runs if r.data.tags.get("labline.kind") == "optuna-study"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2 and {r.data.tags["sweep_worker"] for r in trials} <= {"0", "1"}
    assert all(r.info.status == "FINISHED" for r in [parent, *trials])
    assert [r for r in runs if r.data.tags.get("pipeline") == "dvc"], "the DVC experiment's train stage recorded here"
    assert all(r.info.status != "RUNNING" for r in runs)
    if everything:
        assert [r for r in runs if r.data.tags.get("reproduced_from") == single_id], "the reproduction recorded here"
        assert by_name["probe"].info.status == by_name["student"].info.status == "FINISHED"
        (cv,) = [r for r in runs if r.data.tags.get("role") == "crossval"]
        assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == cv.info.run_id]) == 2, "one run per fold"
        (ensemble,) = [r for r in runs if r.data.tags.get("role") == "ensemble"]
        assert ensemble.info.status == "FINISHED" and single_id in ensemble.data.tags["ensemble_members"]
        ablation = [r for r in runs if r.data.tags.get("ablation") == "tiny" and r.data.tags.get("role") != "ablation"]
        assert len(ablation) == 3 and all(r.info.status == "FINISHED" for r in ablation)

    assert not (project / "mlflow.db").exists(), "nothing in the project's own store"
    assert not (project / "mlartifacts").exists(), "no artifacts beside the project"
    if artifacts is None:  # a SQLite store elsewhere keeps its artifacts beside its file
        other = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        assert {"config.yaml", "model.ckpt"} <= {p.name for p in other.rglob("*")}
    else:
        assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs), "artifacts go through the server"
        stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
        assert {"config.yaml", "model.ckpt", "curves.csv"} <= stored, sorted(stored)[:20]
        # what a client reads back comes from the server's store
        local = MlflowClient(uri).download_artifacts(by_name["single"].info.run_id, "config.yaml", str(project / "dl"))
        assert "backbone" in Path(local).read_text()
