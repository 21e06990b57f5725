"""Trials per hour of a real study, and what the lab stack costs per trial, on this machine.

The same small study (`labline train -m hparams_search=digits_cnn`, no pruning, so every trial trains the same
epochs) runs three times, each in its own project root: the one-machine default (SQLite study and SQLite MLflow
store) with one worker, then the lab stack (PostgreSQL study, MLflow server with its proxied artifact store,
started here by ``labline.lab`` on 127.0.0.1) with one and with two worker processes (``n_jobs``; the sweeper
gives each worker ``cores / n_jobs`` torch threads). Wall time is the whole command, start to conclusion, so
trials per hour include the process start and the study's conclusion (best config, plots). A trial's own time
(Optuna's start to complete: its training and everything it records) is reported as the median over the
study's trials; the per-trial overhead of the lab stack is that median on the lab stack with one worker minus
the median on SQLite. The 1-minute load average before and after each study says how busy the machine was:
on a shared machine, compare figures measured under similar load only.

    python benches/cluster_throughput.py [--trials 6] [--epochs 2] [--port-offset 7600] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def study(name: str, root: Path, storage: str, tracking: str, workers: int, args: argparse.Namespace) -> dict:
    command = [str(Path(sys.executable).parent / "labline"), "train", "-m", "hparams_search=digits_cnn",
               f"hydra.sweeper.study_name={name}", f"hydra.sweeper.storage={storage}", f"hydra.sweeper.n_trials={args.trials}",
               f"hydra.sweeper.n_jobs={workers}", "hydra.sweeper.pruner.name=none", f"trainer.max_epochs={args.epochs}",
               "trainer.enable_progress_bar=false", "logger.log_checkpoint=false", f"logger.experiment_name={name}",
               f"hydra.sweeper.best_config_dir={root / 'best'}", f"hydra.sweep.dir={root / 'multirun'}"]
    env = {**os.environ, "LABLINE_PROJECT_ROOT": str(root), "MLFLOW_TRACKING_URI": tracking, "MPLBACKEND": "Agg"}
    load = round(os.getloadavg()[0], 1)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    trial_s = statistics.median((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return {"variant": name, "workers": workers, "finished": len(done), "wall_s": round(wall, 1),
            "trials_per_hour": round(3600 * len(done) / wall), "median_trial_s": round(trial_s, 2),
            "load_before_after": [load, round(os.getloadavg()[0], 1)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--port-offset", type=int, default=7600)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    from labline.lab.stack import Lab, Ports

    work = Path(tempfile.mkdtemp(prefix="cluster-throughput-"))
    results = []
    sqlite = work / "sqlite"
    sqlite.mkdir()
    results.append(study("sqlite-1", sqlite, f"sqlite:///{sqlite / 'optuna.db'}", f"sqlite:///{sqlite / 'mlflow.db'}", 1, args))
    lab = Lab(work / "lab", Ports().shifted(args.port_offset))
    lab.start(("mlflow",))
    try:
        for workers in (1, 2):
            root = work / f"lab-{workers}"
            root.mkdir()
            results.append(study(f"lab-{workers}", root, lab.database_url("optuna"), lab.tracking_uri, workers, args))
    finally:
        lab.stop()
    one = {r["variant"]: r for r in results}
    overhead = one["lab-1"]["median_trial_s"] - one["sqlite-1"]["median_trial_s"]
    report = {"trials": args.trials, "epochs": args.epochs, "cores": os.cpu_count(), "results": results,
              "server_overhead_s_per_trial": round(overhead, 2),
              "command": "python benches/cluster_throughput.py " + " ".join(sys.argv[1:])}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
