"""Distributed training whose ranks SLURM starts (`srun`), on the real single-node SLURM (2 CPUs: 2 tasks of 1 CPU).

Every task runs the same `labline train trainer=ddp trainer.devices=2` command; global rank zero alone is the run
(one MLflow run, one output folder), the other task follows its training. Then a sweep whose trials are 2-task jobs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN
from services import lab_env, load_study, ok, run
from test_ddp import _gone, single_process_test

pytestmark = pytest.mark.e2e
E2E = Path(__file__).resolve().parents[1] / "e2e"
TINY = ["callbacks=none", "threads=1", "+trainer.limit_train_batches=4", "trainer.enable_progress_bar=false"]


def _env(project: Path, lab, **extra: str) -> dict[str, str]:
    """The user's environment with this repository's e2e folder (rankprobe) on PYTHONPATH, for every task."""
    env = lab_env(project, SLURM_CONF=str(lab.slurm_conf), **extra)
    env.pop("LABLINE_MAX_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(E2E), env.get("PYTHONPATH", "")]))
    return env


def _runs(client: MlflowClient) -> dict[str, object]:
    return {r.info.run_id: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def test_a_two_task_job_trains_one_run_under_srun(project: Path, slurm_lab, tmp_path: Path) -> None:
    """One batch job, two srun steps: a world the trainer does not match is one line (rank zero's) and exit 2;
    then the training: one run over 2 ranks, one curve point per epoch, test metrics of one process."""
    probe, labline = tmp_path / "probe", shlex.quote(str(BIN / "labline"))
    train = [labline, "train", "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=2",
             "+callbacks.probe._target_=rankprobe.RankProbe", f"+callbacks.probe.folder={probe}",
             "run_name=under-srun", "hydra.run.dir=outputs/srun"]
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n"
                      f"srun {labline} train trainer=ddp trainer.devices=3 {' '.join(TINY)} 2> {tmp_path}/bad.err;"
                      f" echo $? > {tmp_path}/bad.rc\n"
                      f"srun {' '.join(train)} > {tmp_path}/train.out 2>&1\n")
    mlflow_db = project / "mlflow.db"
    client = MlflowClient(f"sqlite:///{mlflow_db}")
    before = set(_runs(client)) if mlflow_db.exists() else set()
    folders = set((project / "outputs").iterdir()) if (project / "outputs").exists() else set()  # the other tests'
    result = subprocess.run(["sbatch", "--wait", "--ntasks=2", "--ntasks-per-node=2", "-c", "1", "-t", "15", "-o",
                             str(tmp_path / "job.out"), str(script)], cwd=project, env=_env(project, slurm_lab),
                            capture_output=True, text=True, timeout=900)
    log = (tmp_path / "train.out").read_text() if (tmp_path / "train.out").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "job.out").read_text() + log[-4000:]

    # srun adds its own line ("srun: error: localhost: task 0: Exited with exit code 2"); labline's is one line, once
    bad = [line for line in (tmp_path / "bad.err").read_text().splitlines() if line.strip()]
    assert (tmp_path / "bad.rc").read_text().strip() == "2", bad
    mine = [line for line in bad if not line.startswith("srun: ")]
    assert len(mine) == 1 and mine[0].startswith("labline: error: trainer.devices") and "srun started 2" in mine[0], bad

    new = [r for k, r in _runs(client).items() if k not in before]
    assert len(new) == 1, f"{len(new)} MLflow runs for one training over 2 tasks"
    (trained,) = new
    assert trained.info.status == "FINISHED" and trained.data.tags["slurm_job_id"].isdigit()
    tags = trained.data.tags
    assert (tags["distributed.world_size"], tags["distributed.strategy"], tags["distributed.devices"]) == \
        ("2", "DDPStrategy", "2")
    for key in ("val/loss", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(trained.info.run_id, key)) == [1, 2], key

    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["threads"] for r in ranks] == [1, 1]
    assert [r["train_batches"] for r in ranks] == [4, 4]
    assert ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"], "both ranks trained on the same shard"

    out_dir = project / "outputs" / "srun"
    assert json.loads((out_dir / "run.json").read_text())["run_id"] == trained.info.run_id
    assert set((project / "outputs").iterdir()) - folders == {out_dir}, "one run folder, rank zero's; none for the error"
    recorded = json.loads((out_dir / "metrics.json").read_text())
    single = single_process_test(project, trained, out_dir, tmp_path)
    assert recorded.keys() == single.keys() and recorded
    for key, value in recorded.items():
        assert value == pytest.approx(single[key], abs=1e-6), key
    assert "is available on your system" not in log and "Traceback" not in log, log[-3000:]  # Lightning's srun hint


def test_scancel_of_the_step_stops_every_task_and_the_run_is_killed(project: Path, slurm_lab, tmp_path: Path) -> None:
    """SIGTERM to every task of the srun step (what scancel sends): rank zero records the run KILLED, the other task's
    agent ends its training and exits; the step ends with rank zero's 143."""
    probe, labline = tmp_path / "probe", shlex.quote(str(BIN / "labline"))
    command = [labline, "train", "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=50",
               "+callbacks.probe._target_=rankprobe.RankProbe", f"+callbacks.probe.folder={probe}",
               "run_name=cancelled-by-scancel", "hydra.run.dir=outputs/cancelled"]
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun {' '.join(command)} > {tmp_path}/train.out 2>&1\necho $? > {tmp_path}/rc\n")
    env = _env(project, slurm_lab)
    job = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--ntasks-per-node=2", "-c", "1", "-t", "10", "-o",
                          str(tmp_path / "job.out"), str(script)], cwd=project, env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while not (probe / "rank1.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (probe / "rank1.json").exists(), (tmp_path / "train.out").read_text()[-3000:]
    subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)  # the job's steps, not its batch script
    while not (tmp_path / "rc").exists() and time.monotonic() < deadline + 120:
        time.sleep(0.5)
    log = (tmp_path / "train.out").read_text()
    assert (tmp_path / "rc").read_text().strip() == "143", log[-3000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (killed,) = [r for r in _runs(client).values() if r.data.tags.get("mlflow.runName") == "cancelled-by-scancel"]
    assert killed.info.status == "KILLED" and "SIGTERM" in killed.data.tags["stop_reason"]
    assert _gone(json.loads((probe / "rank1.json").read_text())["pid"]), "the other task's training outlived the step"


def test_sigkill_of_the_step_then_the_same_srun_command_resumes_into_the_same_run(project: Path, slurm_lab,
                                                                                  tmp_path: Path) -> None:
    """Two srun steps of one job run the same command; the first is SIGKILLed (every task) after an epoch: the second
    resumes it into the same MLflow run from the epoch-end checkpoint, every epoch logged once."""
    from labline.runs.resume import latest_checkpoint

    labline = shlex.quote(str(BIN / "labline"))
    command = " ".join([labline, "train", "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=3",
                        "run_name=srun-killed"])
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun {command} > {tmp_path}/first.out 2>&1\n"
                      f"srun {command} > {tmp_path}/second.out 2>&1\necho $? > {tmp_path}/rc\n")
    env = _env(project, slurm_lab)
    old = set(project.glob("outputs/*/*/curves.csv"))
    job = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--ntasks-per-node=2", "-c", "1", "-t", "10", "-o",
                          str(tmp_path / "job.out"), str(script)], cwd=project, env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        curves = [c for c in set(project.glob("outputs/*/*/curves.csv")) - old
                  if len(c.read_text().strip().splitlines()) >= 2 and latest_checkpoint(c.parent)]
        if curves:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no epoch trained in time: " + (tmp_path / "first.out").read_text()[-3000:])
    # SIGKILL to every task of step 0 only (signalling the job with KILL would cancel it, batch script and all)
    subprocess.run(["scancel", "--signal=KILL", f"{job}.0"], env=env, check=True)
    while not (tmp_path / "rc").exists() and time.monotonic() < deadline + 300:
        time.sleep(0.5)
    second = (tmp_path / "second.out").read_text() if (tmp_path / "second.out").exists() else ""
    assert (tmp_path / "rc").exists(), (tmp_path / "job.out").read_text()[-3000:]
    assert (tmp_path / "rc").read_text().strip() == "0", second[-3000:]
    assert "resuming" in second
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (resumed,) = [r for r in _runs(client).values() if r.data.tags.get("mlflow.runName") == "srun-killed"]
    assert resumed.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "val/loss")) == [1, 2, 3]


def test_in_a_one_task_job_lightning_starts_the_ranks_itself(project: Path, slurm_lab, tmp_path: Path) -> None:
    """`sbatch -n 1 -c 2 labline train trainer=ddp trainer.devices=2`: SLURM's world of one would have Lightning train
    alone; labline hands it its plain environment, so its own launcher starts the second rank in the allocation."""
    probe, labline = tmp_path / "probe", shlex.quote(str(BIN / "labline"))
    command = [labline, "train", "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=1", "test_after_fit=false",
               "+callbacks.probe._target_=rankprobe.RankProbe", f"+callbacks.probe.folder={probe}",
               "hydra.run.dir=outputs/one-task"]
    result = subprocess.run(["sbatch", "--wait", "-n", "1", "-c", "2", "-t", "10", "-o", str(tmp_path / "job.out"),
                             "--wrap", " ".join(command)], cwd=project, env=_env(project, slurm_lab), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "job.out").read_text()[-3000:]
    trained = json.loads((project / "outputs" / "one-task" / "run.json").read_text())["run_id"]
    tags = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(trained).data.tags
    assert tags["distributed.world_size"] == "2" and tags["slurm_job_id"].isdigit()
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["threads"] for r in ranks] == [1, 1]


def test_a_sweep_whose_trials_are_two_task_jobs(project: Path, postgres_lab, slurm_lab) -> None:
    """`hydra.sweeper.slurm.tasks_per_node=2` with `trainer=ddp`: the array task's rank zero is the sweep worker, the
    other task trains each trial's second rank; every trial one run over 2 ranks."""
    storage = postgres_lab.database_url("optuna")
    done = ok(run(project, _env(project, slurm_lab), "labline", "train", "-m", "hparams_search=digits_cnn",
                  "hydra.sweeper.backend=slurm", "hydra.sweeper.slurm.cpus_per_task=1",
                  "hydra.sweeper.slurm.tasks_per_node=2", "hydra.sweeper.slurm.time_min=20",
                  "hydra.sweeper.pruner.name=none", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
                  f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=ddp2", "logger.experiment_name=ddp2",
                  "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=2", timeout=900))
    assert "submitted SLURM array" in done.stdout
    trials = load_study("ddp2", storage).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp2")
    runs = client.search_runs([experiment.experiment_id], "", max_results=100)
    children = [r for r in runs if r.data.tags.get("labline.kind") != "optuna-study"]
    assert len(children) == 2 and len(runs) == 3, [r.data.tags.get("labline.kind") for r in runs]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["distributed.world_size"] == "2"
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "val/loss")) == [1, 2]
    assert len({r.data.tags["slurm_job_id"] for r in children}) == 1, "both trials in the one 2-task job"


def test_an_ablation_whose_runs_are_two_task_jobs(project: Path, slurm_lab) -> None:
    """`backend=slurm slurm.tasks_per_node=2` with `trainer=ddp`: each variant's run is one 2-task array task, tracked
    as one run over 2 ranks under the study's parent."""
    done = ok(run(project, _env(project, slurm_lab), "labline", "ablate", "ablation=tiny", "seeds=1", "components=[dropout]",
                  "trainer=ddp", "trainer.devices=2", "logger.experiment_name=ddp-ablation", "backend=slurm",
                  "slurm.cpus_per_task=1", "slurm.tasks_per_node=2", "slurm.time_min=10", timeout=900))
    assert "2/2 runs finished on SLURM" in done.stdout, done.stdout[-2000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp-ablation")
    runs = client.search_runs([experiment.experiment_id], "", max_results=100)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and len(runs) == 3
    assert {r.data.tags["distributed.world_size"] for r in children} == {"2"}
    assert all(r.info.status == "FINISHED" and "test/acc" in r.data.metrics for r in children)
