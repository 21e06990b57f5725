"""How far one PostgreSQL study and one MLflow server coordinate workers: many processes, trivial trials.

Each worker process runs labline's own budget loop (``Budget.decide`` and ``SharedStudy.ask`` under
``SharedStudy.locked``, then ``tell``), as a sweep worker does, but the objective is a sleep of
``--trial-seconds`` instead of a training; with ``--mlflow`` each trial also opens and closes one child run
on the server under a study parent, as a trial's training does. It reports whether the study holds exactly
``n_trials`` finished trials, trials per second, and how long workers waited for the budget lock.
``--lock none`` drops the lock (the check and the ask then race) to show what it prevents.

    python benches/coordination.py [--workers 16] [--trials 200] [--trial-seconds 0.05] [--mlflow]
                                   [--lock db|none] [--storage URL --tracking-uri URI | (starts the lab stack)]
                                   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import optuna
from optuna.trial import TrialState

from labline.studies.sweep.space import SearchSpace
from labline.studies.sweep.study import Budget, SharedStudy, make_storage


def _space() -> SearchSpace:
    from optuna.distributions import FloatDistribution

    return SearchSpace({"x": FloatDistribution(-10, 10)}, {}, [])


def worker(index: int, storage_url: str, study: str, n_trials: int, seconds: float, lock: str, tracking: str | None,
           parent: str | None, session: str, out: str) -> None:
    """One worker: ask under the lock until the budget is spent; writes its lock waits and trial count to ``out``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(storage_url, heartbeat_interval=0, on_stale=lambda s, t: None, create_tables=False)
    shared = SharedStudy(optuna.load_study(study_name=study, storage=storage), storage, Path(out + ".lock"), 0)
    if lock == "none":
        shared.locked = nullcontext  # type: ignore[method-assign]
    store = None
    if tracking:
        from labline.tracking.store import open_store

        store = open_store(tracking)
    budget, space, waits, mine, run_ms = Budget(n_trials, 10**9, session), _space(), [], 0, []
    while True:
        before = shared.lock_wait
        with shared.locked():
            decision = budget.decide(shared.trials())
            trial = shared.ask(space, {"worker": index}) if decision == "ask" else None
        waits.append(shared.lock_wait - before)
        if decision == "stop":
            break
        if trial is None:
            time.sleep(seconds)
            continue
        start = time.monotonic()
        if store is not None:
            from labline.tracking.lifecycle import open_run

            with open_run(store, "coordination", f"trial-{trial.number}", parent=parent,
                          tags={"optuna_trial": str(trial.number)}) as run:
                run.log_metrics({"x": trial.params["x"]})
                time.sleep(seconds)
        else:
            time.sleep(seconds)
        run_ms.append(1000 * (time.monotonic() - start - seconds))
        shared.study.tell(trial, values=[-trial.params["x"] ** 2], state=TrialState.COMPLETE)
        mine += 1
    Path(out).write_text(json.dumps({"waits": waits, "trials": mine, "run_ms": run_ms}))


def measure(storage_url: str, tracking: str | None, workers: int, n_trials: int, seconds: float, lock: str) -> dict:
    study = f"coordination-{uuid.uuid4().hex[:8]}"
    storage = make_storage(storage_url, heartbeat_interval=0, on_stale=lambda s, t: None)
    optuna.create_study(study_name=study, storage=storage, direction="maximize")
    parent = None
    if tracking:
        from labline.tracking.lifecycle import close_run, open_run
        from labline.tracking.store import open_store

        with open_run(open_store(tracking), "coordination", f"study-{study}") as run:
            parent = run.run_id
            run.end_as("FINISHED")
        close_run(open_store(tracking), parent, "FINISHED")
    folder = Path(tempfile.mkdtemp(prefix="coordination-"))
    context = multiprocessing.get_context("spawn")
    start = time.monotonic()
    processes = [context.Process(target=worker, args=(i, storage_url, study, n_trials, seconds, lock, tracking, parent,
                                                      "bench", str(folder / f"w{i}.json"))) for i in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    elapsed = time.monotonic() - start
    reports = [json.loads((folder / f"w{i}.json").read_text()) for i in range(workers)]
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finished = sum(t.state == TrialState.COMPLETE for t in trials)
    waits = sorted(w for r in reports for w in r["waits"])
    run_ms = [m for r in reports for m in r["run_ms"]]
    return {"workers": workers, "n_trials": n_trials, "finished": finished, "exact": finished == n_trials,
            "lock": lock, "trial_seconds": seconds, "elapsed_s": round(elapsed, 2),
            "trials_per_s": round(finished / elapsed, 2), "lock_wait_mean_ms": round(1000 * statistics.fmean(waits), 2),
            "lock_wait_p95_ms": round(1000 * waits[int(0.95 * (len(waits) - 1))], 2),
            "lock_wait_share": round(sum(waits) / (workers * elapsed), 4),
            "mlflow_ms_per_trial": round(statistics.fmean(run_ms), 1) if tracking and run_ms else None,
            "per_worker": sorted(r["trials"] for r in reports)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--trial-seconds", type=float, default=0.05)
    parser.add_argument("--lock", choices=["db", "none"], default="db")
    parser.add_argument("--mlflow", action="store_true", help="each trial opens and closes a run on the MLflow server")
    parser.add_argument("--storage", help="a PostgreSQL URL (default: start the lab stack in a temporary folder)")
    parser.add_argument("--tracking-uri", help="an MLflow server (default: the lab stack's)")
    parser.add_argument("--port-offset", type=int, default=2500)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    lab = None
    if args.storage is None:
        from labline.lab.stack import Lab, Ports

        lab = Lab(Path(tempfile.mkdtemp(prefix="coordination-lab-")), Ports().shifted(args.port_offset))
        lab.start(("mlflow",) if args.mlflow else ("postgres",))
        args.storage = lab.database_url("optuna")
        args.tracking_uri = args.tracking_uri or (lab.tracking_uri if args.mlflow else None)
    try:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        result = measure(args.storage, args.tracking_uri if args.mlflow else None, args.workers, args.trials,
                         args.trial_seconds, args.lock)
    finally:
        if lab is not None:
            lab.stop()
    result["command"] = "python benches/coordination.py " + " ".join(sys.argv[1:])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
