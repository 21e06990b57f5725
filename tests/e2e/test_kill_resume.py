"""Real processes, real signals: SIGKILL mid-training then the same command resumes; SIGINT stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from killpoints import POINTS
from mlflow.tracking import MlflowClient
from project_copy import BIN, project_env, run_cli

from labline.runs import resume

pytestmark = pytest.mark.e2e

EPOCHS = 8
COMMAND = ["train", f"trainer.max_epochs={EPOCHS}", "callbacks=none", "threads=1", "+trainer.limit_train_batches=6"]


def _start(project: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "labline"), *COMMAND, *extra], cwd=project, env=project_env(project),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _curves(project: Path) -> set[Path]:
    return set(project.glob("outputs/*/*/curves.csv"))


def _wait_for_epochs(project: Path, proc: subprocess.Popen, epochs: int, old: set[Path], timeout: float = 240) -> None:
    """Until `epochs` rows of this process's curve exist and a resumable checkpoint is on disk."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        for curves in _curves(project) - old:
            rows = curves.read_text().strip().splitlines()[1:]
            if len(rows) >= epochs and resume.latest_checkpoint(curves.parent) is not None:
                return
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


def _client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def _all_runs(project: Path) -> list:
    client = _client(project)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_sigkill_then_same_command_resumes_into_the_same_run_with_identical_results(project: Path) -> None:
    old, before = _curves(project), {r.info.run_id for r in _all_runs(project)}  # the other tests' runs: other seeds
    proc = _start(project)
    _wait_for_epochs(project, proc, 3, old)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (killed,) = [r for r in _all_runs(project) if r.info.run_id not in before]
    assert killed.info.status == "RUNNING", "SIGKILL leaves no chance to close the run; the resume closes it"

    resumed = run_cli(project, "labline", *COMMAND)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    (run,) = [r for r in _all_runs(project) if r.info.run_id not in before]
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in _client(project).get_metric_history(run.info.run_id, "val/loss")]
    assert sorted(steps) == list(range(1, EPOCHS + 1)), f"duplicated or missing epochs: {sorted(steps)}"

    fresh = run_cli(project, "labline", *COMMAND, "resume=false", "run_name=uninterrupted")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    uninterrupted = next(r for r in _all_runs(project) if r.info.run_name == "uninterrupted")
    for key in ("test/acc", "test/loss", "test/f1_macro"):
        assert run.data.metrics[key] == uninterrupted.data.metrics[key], key


def test_sigint_and_sigterm_stop_cleanly_with_a_checkpoint(project: Path) -> None:
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        before = {r.info.run_id for r in _all_runs(project)}
        old = _curves(project)
        proc = _start(project, f"seed={int(sig)}")
        _wait_for_epochs(project, proc, 1, old)
        time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err[-2000:]
        assert "checkpoint kept" in err
        (run,) = [r for r in _all_runs(project) if r.info.run_id not in before]
        assert run.info.status == "KILLED"
        assert run.data.tags["stop_reason"].startswith("stopped by SIG")


POINT_COMMAND = ["train", "trainer.max_epochs=4", "callbacks=none", "threads=1", "+trainer.limit_train_batches=5",
                 "trainer.enable_progress_bar=false"]


def _metrics(run) -> dict[str, float]:  # noqa: ANN001 - an MLflow Run
    return {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}


POINT_SEED = ["seed=10"]


@pytest.fixture(scope="module")
def uninterrupted(project: Path) -> dict[str, float]:
    """Test metrics of the command never interrupted (no killer callback), shared by every kill point."""
    done = run_cli(project, "labline", *POINT_COMMAND, *POINT_SEED, "resume=false", "run_name=uninterrupted-points")
    assert done.returncode == 0, done.stderr[-2000:]
    (reference,) = [r for r in _all_runs(project) if r.info.run_name == "uninterrupted-points"]
    return _metrics(reference)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_any_point_then_the_same_command_gives_the_uninterrupted_metrics(project: Path, tmp_path: Path,
                                                                                   uninterrupted: dict[str, float],
                                                                                   point: str) -> None:
    env = {**project_env(project), "PYTHONPATH": str(Path(__file__).parent)}
    killer = ["+callbacks.kill._target_=killpoints.KillAt", f"+callbacks.kill.point={point}",
              f"+callbacks.kill.marker={tmp_path / 'killed'}"]
    command = [str(BIN / "labline"), *POINT_COMMAND, *POINT_SEED, *killer]
    before = {r.info.run_id for r in _all_runs(project)}
    killed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (dead,) = [r for r in _all_runs(project) if r.info.run_id not in before]
    assert dead.info.status == "RUNNING", "SIGKILL gives the run no chance to close"

    resumed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    runs = {r.info.run_id: r for r in _all_runs(project) if r.info.run_id not in before}
    assert all(r.info.status != "RUNNING" for r in runs.values()), "no run is left RUNNING"
    (finished,) = [r for r in runs.values() if r.info.status == "FINISHED"]
    steps = sorted(m.step for m in _client(project).get_metric_history(finished.info.run_id, "val/loss"))
    assert steps == [1, 2, 3, 4], f"duplicated or missing epochs: {steps}"
    if point in ("run_created", "before_first_checkpoint"):  # nothing to resume from: a new run, the dead one KILLED
        assert runs[dead.info.run_id].info.status == "KILLED" and finished.info.run_id != dead.info.run_id
    else:
        assert finished.info.run_id == dead.info.run_id, "resumed into the same MLflow run"
    assert _metrics(finished) == uninterrupted and uninterrupted
