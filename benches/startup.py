"""How long labline's commands take to start, each as a ratio to ``python -c "import lightning"`` measured in the same run.

Commands that do not train should not pay for the training stack (goal: at most 1.5 s); a training should reach its
first step within 1 s of the imports it cannot avoid (``import lightning`` is the reference). Each command runs
``--repeat`` times in a fresh process, interleaved with the reference, and its median wall time is reported; a
training's first step is timed by a callback (``startup_probe.FirstStep``) that writes the clock at its first
training batch. Trainings use a temporary project root (MLflow store, resume records) whose store is created by a
first, untimed training, as a user's project has one after its first run.

    python benches/startup.py [--repeat 3] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The console script's own entry point, run by this interpreter with this checkout's sources first.
LABLINE = [sys.executable, "-c", "from labline.cli import main; main()"]
# What every training imports and opens before labline's own work: Lightning, MLflow, and the project's SQLite store
# (MLflow's SqlAlchemyStore checks the schema against its alembic migrations each time it opens one).
STACK = "import lightning.pytorch, mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
TRAIN = ["train", "trainer.max_epochs=1", "threads=1", "trainer.enable_progress_bar=false", "test_after_fit=false"]
# (label, arguments, exit codes that count as success): `docs --check` exits 2 when a rendered table is stale,
# which it reports after the same work.
COMMANDS = [
    ("labline --help", ["--help"], (0,)),
    ("labline train --help", ["train", "--help"], (0,)),
    ("labline report --help", ["report", "--help"], (0,)),
    ("labline ensemble --help", ["ensemble", "--help"], (0,)),
    ("labline params", ["params", "--output", "{tmp}/params.yaml"], (0,)),
    ("labline docs --check", ["docs", "--check"], (0, 2)),
    ("labline runs", ["runs", "--limit", "5"], (0,)),
    ("labline train --cfg job", ["train", "--cfg", "job"], (0,)),
]


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benches"), env.get("PYTHONPATH", "")])
    env["LABLINE_PROJECT_ROOT"] = str(project)
    env["MPLBACKEND"] = "Agg"
    return env


def _run(args: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return took


def _training(env: dict[str, str], tmp: Path, n: int) -> tuple[float, float]:
    """(seconds to the first training step, seconds to the end) of one ``labline train`` in a fresh process."""
    probe = tmp / f"first-step-{n}"
    args = [*LABLINE, *TRAIN, f"seed={n}", f"hydra.run.dir={tmp / f'run{n}'}",
            "+callbacks.probe._target_=startup_probe.FirstStep", f"+callbacks.probe.path={probe}"]
    start_epoch, start = time.time(), time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"labline train exited {done.returncode}:\n{done.stderr[-2000:]}")
    return float(probe.read_text()) - start_epoch, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    times: dict[str, list[float]] = {"import lightning": [], "import lightning.pytorch + mlflow, open the store": [],
                                     **{label: [] for label, _, _ in COMMANDS},
                                     "labline train: first step": [], "labline train: whole run": []}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        env = _env(tmp)
        _training(env, tmp, 0)  # creates the project's MLflow store (schema migrations run once per store)
        for n in range(1, args.repeat + 1):
            times["import lightning"].append(_run([sys.executable, "-c", "import lightning"], env))
            times["import lightning.pytorch + mlflow, open the store"].append(
                _run([sys.executable, "-c", STACK, f"sqlite:///{tmp / 'mlflow.db'}"], env))
            for label, words, ok in COMMANDS:
                times[label].append(_run([*LABLINE, *(w.format(tmp=tmp) for w in words)], env, ok))
            first, whole = _training(env, tmp, n)
            times["labline train: first step"].append(first)
            times["labline train: whole run"].append(whole)
    median = {label: statistics.median(values) for label, values in times.items()}
    reference = median["import lightning"]
    load = f"{load_start:.1f}-{os.getloadavg()[0]:.1f}"
    lines = [f"| {time.strftime('%Y-%m-%d')} | {load} | {label} | {seconds:.2f} | {seconds / reference:.2f}x |"
             for label, seconds in median.items()]
    print("\n".join(lines))
    first = median["labline train: first step"]
    print(f"first step - import lightning: {first - reference:.2f} s; first step - (import lightning.pytorch + mlflow, "
          f"open the store): {first - median['import lightning.pytorch + mlflow, open the store']:.2f} s")
    _record(Path(args.out), lines)


HEADER = """## Start-up (`benches/startup.py`)

Median wall time of each command in a fresh process (`--repeat` runs, interleaved), and its ratio to
`python -c "import lightning"` in the same run; load is the 1-minute load average at the start and the end.
Trainings: `labline train trainer.max_epochs=1 threads=1` (no test) in a project whose MLflow store exists;
"first step" is the time from starting the process to its first training batch. Goals: commands that do not
train at most 1.5 s; a training's first step within 1 s of the imports it cannot avoid (the row "import
lightning.pytorch + mlflow, open the store" is that floor: Lightning, MLflow and opening the project's SQLite store).

| date | load | command | s | / import lightning |
| --- | --- | --- | --- | --- |
"""


def _record(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if HEADER not in text:
        text = text.rstrip() + "\n\n" + HEADER
    path.write_text(text.replace(HEADER, HEADER + "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
