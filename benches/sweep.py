"""Pruning pays: the Optuna sweeper with pruning vs the same without pruning vs random search.

Every variant runs the real `labline train -m hparams_search=digits_cnn` (same search space, number
of trials, epochs per trial, sampler seed and training seed) into a throwaway MLflow store and study
file, then reads the study: epochs actually trained and the best validation accuracy reached.

    python benches/sweep.py [--trials 12] [--epochs 10] [--threads 1] [--variants default|all] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
# The preset (conf/hparams_search/digits_cnn.yaml) prunes with successive halving; `--variants all` adds
# hyperband and median pruning. Keys the preset does not set need Hydra's `+` (a structured config).
VARIANTS = {
    "TPE + successive halving": [],
    "TPE + hyperband": ["hydra.sweeper.pruner.name=hyperband"],
    "TPE + median pruning": ["hydra.sweeper.pruner.name=median"],
    "TPE, no pruning": ["hydra.sweeper.pruner.name=none"],
    "random search, no pruning": ["hydra.sweeper.sampler.name=random", "hydra.sweeper.pruner.name=none"],
}
DEFAULT_VARIANTS = ["TPE + successive halving", "TPE, no pruning", "random search, no pruning"]
BASELINE = "TPE, no pruning"


def run_variant(name: str, extra: list[str], args: argparse.Namespace, workdir: Path) -> dict[str, float | int | str]:
    study_name = "bench-" + "".join(c if c.isalnum() else "-" for c in name.lower())
    command = [str(Path(sys.executable).parent / "labline"), "train", "-m", "hparams_search=digits_cnn",
               f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.n_trials={args.trials}",
               f"trainer.max_epochs={args.epochs}", f"threads={args.threads}", "logger.log_checkpoint=false",
               f"hydra.sweeper.best_config_dir={workdir / 'best'}", f"hydra.sweep.dir={workdir / 'multirun' / study_name}",
               *extra]
    env = {**os.environ, "LABLINE_PROJECT_ROOT": str(workdir), "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{workdir / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    return {"variant": name, "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "epochs": sum(t.user_attrs.get("epochs", 0) for t in trials), "best": study.best_value, "wall": wall}


def table(rows: list[dict]) -> str:
    baseline = next(r for r in rows if r["variant"] == BASELINE)["epochs"]
    lines = ["| variant | trials complete / pruned | epochs trained | vs unpruned TPE | best val acc | wall s |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {r['complete']} / {r['pruned']} | {r['epochs']} | {r['epochs'] / baseline:.2f}x | "
              f"{r['best']:.4f} | {r['wall']:.0f} |" for r in rows]
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Per pruned variant: did it reach the unpruned best accuracy within a third of the unpruned epochs?"""
    baseline = next(r for r in rows if r["variant"] == BASELINE)
    lines = []
    for row in rows:
        if row["variant"] == BASELINE or row["variant"].startswith("random"):
            continue
        ratio, same = row["epochs"] / baseline["epochs"], row["best"] >= baseline["best"]
        met = "met" if same and ratio <= 1 / 3 else "not met"
        lines.append(f"- {row['variant']}: best {row['best']:.4f} vs {baseline['best']:.4f} unpruned, with "
                     f"{ratio:.2f}x its epochs: goal {met} at this budget.")
    return lines


SECTION = "## Hyperparameter search: pruning vs none vs random (`benches/sweep.py`)"


def record(path: Path, body: str) -> None:
    """Rewrite this benchmark's own section of the file, leaving every other section as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured on the project's 2-core CPU machines.\n"
    section = f"{SECTION}\n\n{body}\n"
    if SECTION in text:
        before, rest = text.split(SECTION, 1)
        following = rest.find("\n## ")
        text = before + section + (rest[following:] if following >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", choices=["default", "all"], default="default",
                        help="default: successive halving, no pruning, random search; all: also hyperband and median")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    names = list(VARIANTS) if args.variants == "all" else DEFAULT_VARIANTS
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labline-bench-sweep-") as tmp:
        for name in names:
            rows.append(run_variant(name, VARIANTS[name], args, Path(tmp)))
            print(rows[-1], flush=True)
    result = table(rows)
    print(result)
    load = os.getloadavg()[1]
    body = (f"Search space of `conf/hparams_search/digits_cnn.yaml` (optimizer, log lr, log weight decay, dropout, batch\n"
            f"size) on the digits hold-out split; {args.trials} trials of at most {args.epochs} epochs each (early\n"
            f"stopping as configured), sampler seed 0, training seed 0, {args.threads} torch thread(s), trials in-process;\n"
            f"measured {time.strftime('%Y-%m-%d')} in {time.perf_counter() - start:.0f} s (5-minute load average at the end\n"
            f"{load:.1f} on 2 shared cores: wall times are indicative, epochs and accuracies are not load-dependent).\n"
            f"Successive halving (the preset) and hyperband: min_resource 1, reduction factor 3; median: 5 startup\n"
            f"trials, judged from epoch 3.\n"
            f"Epochs trained is the sum over all trials; the goal is the unpruned best accuracy for at most a third of its\n"
            f"epochs.\n\n{result}\n\n" + "\n".join(verdicts(rows)))
    record(Path(args.out), body)


if __name__ == "__main__":
    main()
