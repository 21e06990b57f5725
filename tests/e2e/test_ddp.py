"""Two real processes (Lightning DDP over gloo) train one labline run: one MLflow run, curves once per epoch, the
test metrics of one process, SyncBatchNorm when asked, resume after SIGKILL, every rank stopped by a NaN or a signal.

Tiny on purpose (2-3 epochs of 4 batches, one thread per rank): on 2 shared cores this checks correctness, not speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from project_copy import BIN, project_env

from labline.runs import resume
from labline.runs.assembly import prepare_run

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
COMMAND = ["train", "trainer=ddp", "callbacks=none", "threads=1", "+trainer.limit_train_batches=4",
           "trainer.enable_progress_bar=false"]


def _env(project: Path) -> dict[str, str]:
    """The user's environment plus this folder (rankprobe) on PYTHONPATH, for every rank."""
    env = project_env(project)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    return env


def _args(probe: Path, *extra: str) -> list[str]:
    return [str(BIN / "labline"), *COMMAND, "+callbacks.probe._target_=rankprobe.RankProbe",
            f"+callbacks.probe.folder={probe}", *extra]


def _train(project: Path, probe: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_args(probe, *extra), cwd=project, env=_env(project), capture_output=True, text=True,
                          timeout=400)


def _start(project: Path, probe: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_args(probe, *extra), cwd=project, env=_env(project), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _runs(project: Path) -> dict[str, object]:
    if not (project / "mlflow.db").exists():
        return {}
    client = _client(project)
    return {r.info.run_id: r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def _new_run(project: Path, before: set[str]):  # noqa: ANN202 - an MLflow Run
    new = [r for k, r in _runs(project).items() if k not in before]
    assert len(new) == 1, f"{len(new)} MLflow runs for one training over 2 processes"
    return new[0]


def _steps(project: Path, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client(project).get_metric_history(run_id, key))


def _ranks(probe: Path) -> list[dict]:
    return [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def single_process_test(project: Path, run, out_dir: Path, tmp: Path) -> dict[str, float]:  # noqa: ANN001
    """The run's checkpoint tested by one process, from the run's own resolved config (also tests/cluster/test_srun)."""
    config = OmegaConf.load(_client(project).download_artifacts(run.info.run_id, "config.yaml", str(tmp)))
    config.trainer.update(devices=1, strategy="auto", sync_batchnorm=False, enable_progress_bar=False)
    config.callbacks = {}
    one = prepare_run(config, tmp / "single", project)
    checkpoint = out_dir / json.loads((out_dir / "run.json").read_text())["checkpoint"]
    results = one.trainer.test(one.task, datamodule=one.datamodule, ckpt_path=str(checkpoint), verbose=False,
                               weights_only=True)[0]
    return {k: float(v) for k, v in results.items()}  # test/acc, as the run records them


def test_two_ranks_make_one_run_with_per_epoch_curves_and_the_single_process_test_metrics(project: Path,
                                                                                          tmp_path: Path) -> None:
    before, probe = set(_runs(project)), tmp_path / "probe"
    done = _train(project, probe, "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = _new_run(project, before)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["distributed.world_size"], tags["distributed.strategy"], tags["distributed.devices"]) == \
        ("2", "DDPStrategy", "2")
    for key in ("val/loss", "train/loss"):
        assert _steps(project, run.info.run_id, key) == [1, 2], f"{key}: one point per epoch, not one per rank"

    ranks = _ranks(probe)
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["threads"] for r in ranks] == [1, 1]
    assert all(r["batchnorm"] > 0 and r["sync_batchnorm"] == 0 for r in ranks), ranks
    assert [r["train_batches"] for r in ranks] == [4, 4]
    assert ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"], "both ranks trained on the same shard"

    out_dir = next(p.parent for p in project.glob("outputs/*/*/run.json") if run.info.run_id in p.read_text())
    recorded = json.loads((out_dir / "metrics.json").read_text())
    single = single_process_test(project, run, out_dir, tmp_path)
    assert recorded.keys() == single.keys() and recorded
    for key, value in recorded.items():
        assert value == pytest.approx(single[key], abs=1e-6), key
        assert run.data.metrics[key] == pytest.approx(value, abs=1e-6), key

    val = np.load(_client(project).download_artifacts(run.info.run_id, "predictions/val.npz", str(tmp_path)))
    assert len(val["probs"]) == len(val["index"]) == len(set(val["index"].tolist())) > 0, "each val sample once"


def test_sync_batchnorm_on_the_cpu_is_one_line_before_any_run(project: Path, tmp_path: Path) -> None:
    """torch's DistributedDataParallel refuses SyncBatchNorm on CPU modules; labline says so before the run exists."""
    before = set(_runs(project))
    done = _train(project, tmp_path / "probe", "trainer.sync_batchnorm=true")
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert "trainer.sync_batchnorm" in line and "GPU" in line
    assert set(_runs(project)) == before


def test_sigkill_of_the_job_then_the_same_command_resumes_into_the_same_run(project: Path, tmp_path: Path) -> None:
    before, probe = set(_runs(project)), tmp_path / "probe"
    extra = ("trainer.max_epochs=3", "run_name=ddp-killed")
    old = set(project.glob("outputs/*/*/curves.csv"))
    proc = _start(project, probe, *extra)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
        curves = [c for c in set(project.glob("outputs/*/*/curves.csv")) - old
                  if len(c.read_text().strip().splitlines()) >= 2 and resume.latest_checkpoint(c.parent)]
        if curves:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no epoch trained in time")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: rank zero and the rank it started
    proc.wait(timeout=60)
    assert all(_gone(r["pid"]) for r in _ranks(probe))
    killed = _new_run(project, before)
    assert killed.info.status == "RUNNING"

    resumed = _train(project, probe, *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    run = _new_run(project, before)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert _steps(project, run.info.run_id, "val/loss") == [1, 2, 3], "every epoch once"


def test_a_nan_on_one_rank_stops_both_and_the_run_fails(project: Path, tmp_path: Path) -> None:
    before, probe = set(_runs(project)), tmp_path / "probe"
    done = _train(project, probe, "trainer.max_epochs=2", "+callbacks.probe.poison_rank=1",
                  "+callbacks.probe.poison_step=2")
    assert done.returncode == 1, done.stderr[-3000:]
    run = _new_run(project, before)
    assert run.info.status == "FAILED"
    assert "NonFiniteError: non-finite" in run.data.tags["failure_reason"]
    assert "global step 2" in run.data.tags["failure_reason"]
    assert _gone(_ranks(probe)[1]["pid"]), "the other rank outlived the failed run"


def test_sigterm_to_rank_zero_stops_every_rank_and_the_run_is_killed(project: Path, tmp_path: Path) -> None:
    before, probe = set(_runs(project)), tmp_path / "probe"
    proc = _start(project, probe, "trainer.max_epochs=50", "run_name=ddp-term")
    deadline = time.time() + 300
    while not (probe / "rank1.json").exists() and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # rank zero only, as a scheduler would
    try:
        assert proc.wait(timeout=120) == 143
    finally:
        if proc.poll() is None:  # a hung job must not outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
    run = _new_run(project, before)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["stop_reason"]
    assert _gone(_ranks(probe)[1]["pid"])


def test_few_shot_episodes_are_shared_out_between_the_ranks_and_tested_once(project: Path, tmp_path: Path) -> None:
    """8 training episodes over 2 ranks: 4 each, different ones; the 10 test episodes are scored once each."""
    before, probe = set(_runs(project)), tmp_path / "probe"
    done = _train(project, probe, "experiment=fewshot_protonet_glyphs", "data.source.classes=40", "data.source.samples=10",
                  "data.source.size=16", "backbone.channels=[16,16]", "task.datamodule.query=5",
                  "task.datamodule.train_episodes=8", "task.datamodule.val_episodes=4", "task.datamodule.test_episodes=10",
                  "trainer.max_epochs=1", "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]
    run = _new_run(project, before)
    ranks = _ranks(probe)
    assert [r["train_batches"] for r in ranks] == [4, 4]
    assert ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"]
    assert run.data.metrics["test/episodes"] == 10


def test_torchrun_starts_every_rank_and_rank_zero_alone_is_the_run(project: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node=2 labline train ...`: both processes run the command; rank zero makes the one run and
    the one output folder, the other rank follows its training (what srun does on SLURM: tests/cluster/test_srun.py)."""
    before, probe = set(_runs(project)), tmp_path / "probe"
    folders = set(project.glob("outputs/*/*"))
    done = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", *_args(probe, "trainer.max_epochs=2")],
                          cwd=project, env=_env(project), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run = _new_run(project, before)
    assert run.info.status == "FINISHED" and run.data.tags["distributed.world_size"] == "2"
    assert _steps(project, run.info.run_id, "val/loss") == [1, 2]
    ranks = _ranks(probe)
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"]
    (out_dir,) = set(project.glob("outputs/*/*")) - folders
    recorded = json.loads((out_dir / "metrics.json").read_text())
    single = single_process_test(project, run, out_dir, tmp_path)
    assert recorded and all(value == pytest.approx(single[key], abs=1e-6) for key, value in recorded.items())
