"""Pruning pays: the Optuna sweeper with pruning vs the same without pruning vs random search.

Every variant runs the real `labline train -m hparams_search=digits_cnn` (same search space, number
of trials, epochs per trial, sampler seed and training seed) into its own throwaway MLflow store and
study file, then reads the study: epochs actually trained and the best validation accuracy reached;
the study's chosen configuration is then trained again with `--retrain-seeds` (val and test accuracy).
Each seed repeats all variants with that seed as both sampler and training seed, so a pruner is not
judged on one lucky draw. Then a replay widens the sample cheaply: the per-epoch curves of every trial
the unpruned variants trained to the end, drawn `--trials` at a time in random order (`--draws` times),
are fed to each pruner as Optuna sees them live (labline's settings, the preset's for successive halving),
counting epochs and whether the draw's best configuration survives. Trials are i.i.d. draws there (random
search), not TPE's choices, and training is not re-run.

    python benches/sweep.py [--trials 30] [--epochs 20] [--seeds 0 1 2] [--threads 1] [--jobs 1]
                            [--variants default|all|NAME ...] [--retrain-seeds 100 101 102] [--draws 200]
                            [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labline.studies.sweep.study import make_pruner  # noqa: E402

PRESET = ROOT / "conf" / "hparams_search" / "digits_cnn.yaml"
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the replay creates hundreds of in-memory studies
# The preset (conf/hparams_search/digits_cnn.yaml) prunes with successive halving; `all` adds hyperband and
# median pruning with their settings in labline (hydra.sweeper.pruner.name swaps the class, see docs/sweeps.md).
VARIANTS = {
    "TPE + successive halving": [],
    "TPE + hyperband": ["hydra.sweeper.pruner.name=hyperband"],
    "TPE + median pruning": ["hydra.sweeper.pruner.name=median"],
    "TPE, no pruning": ["hydra.sweeper.pruner.name=none"],
    "random search, no pruning": ["hydra.sweeper.sampler.name=random", "hydra.sweeper.pruner.name=none"],
}
DEFAULT_VARIANTS = ["TPE + successive halving", "TPE, no pruning", "random search, no pruning"]
BASELINE = "TPE, no pruning"
UNPRUNED = (BASELINE, "random search, no pruning")


def run_variant(name: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One study in its own project root (its own optuna.db and mlflow.db), so variants may run side by side."""
    study_name = "bench-" + "".join(c if c.isalnum() else "-" for c in name.lower()) + f"-{seed}"
    root = workdir / study_name
    command = [str(Path(sys.executable).parent / "labline"), "train", "-m", "hparams_search=digits_cnn",
               f"hydra.sweeper.study_name={study_name}", f"hydra.sweeper.n_trials={args.trials}",
               f"hydra.sweeper.sampler.seed={seed}", f"seed={seed}", f"trainer.max_epochs={args.epochs}",
               f"threads={args.threads}", "logger.log_checkpoint=false", f"hydra.sweeper.best_config_dir={root / 'best'}",
               f"hydra.sweep.dir={root / 'multirun'}", *VARIANTS[name]]
    env = {**os.environ, "LABLINE_PROJECT_ROOT": str(root), "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} (seed {seed}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{root / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    # Every trial reports val/acc at its best epoch so far after each epoch, pruned or not (steps: epochs trained).
    curves = {tuple(sorted(t.params.items())): [t.intermediate_values[s] for s in range(1, args.epochs + 1)]
              for t in trials if t.state == TrialState.COMPLETE and len(t.intermediate_values) == args.epochs}
    return {"variant": name, "seed": seed, "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "epochs": sum(t.user_attrs.get("epochs", 0) for t in trials), "best": study.best_value, "wall": wall,
            "curves": curves, "retrained": retrain(study.best_trial.params, root, env, args)}


def retrain(params: dict, root: Path, env: dict, args: argparse.Namespace) -> list[tuple[float, float]]:
    """The study's chosen configuration trained again with fresh seeds: (val acc at its best epoch, test accuracy)
    per seed. A study's best value is the maximum of noisy measurements (360 validation images: one image is
    0.0028), so two sweeps whose best values differ by an image may well have found equally good configurations;
    fresh seeds, and the test split, untouched while tuning, tell."""
    groups_first = sorted(params.items(), key=lambda kv: "." in kv[0])
    command = [str(Path(sys.executable).parent / "labline"), "train", "-m", f"seed={','.join(map(str, args.retrain_seeds))}",
               f"trainer.max_epochs={args.epochs}", f"threads={args.threads}", "logger.log_checkpoint=false",
               "logger.experiment_name=retrain", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={root / 'retrain'}",
               *(f"{key}={value}" for key, value in groups_first)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"retraining {params} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("retrain").experiment_id])
    scores = []
    for run in runs:
        best_epoch = int(run.data.tags["best_epoch"])
        val = next(m.value for m in client.get_metric_history(run.info.run_id, "val/acc") if m.step == best_epoch)
        scores.append((val, run.data.metrics["test/acc"]))
    if len(scores) != len(args.retrain_seeds):
        raise SystemExit(f"retraining {params}: {len(scores)} runs recorded, expected {len(args.retrain_seeds)}")
    return scores


def replay_pruners() -> dict[str, dict]:
    """Pruner specs as the sweeper gets them: the preset's, the preset's with one option changed (the
    alternatives its comments weigh), and labline's hyperband and median."""
    preset = OmegaConf.to_container(OmegaConf.load(PRESET).hydra.sweeper.pruner)
    options = ", ".join(f"{k} {v}" for k, v in preset.items() if k != "name")
    specs = {f"{preset['name']} (the preset: {options})": preset}
    if preset["name"] == "successive_halving":
        specs |= {f"{preset['name']}, {key} {value}": {**preset, key: value}
                  for key, value in (("reduction_factor", 2), ("min_resource", 2), ("bootstrap_count", 1))}
    return specs | {"hyperband": {"name": "hyperband"}, "median": {"name": "median"}}


def replay(pruner: optuna.pruners.BasePruner, curves: list[list[float]], name: str) -> tuple[int, float | None]:
    """One study of these curves in this order, trial after trial as the sweeper runs them: (epochs, best complete).
    Named, because hyperband puts a trial in a bracket by a hash of the study name and trial number."""
    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    epochs, best = 0, None
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
            epochs += 1
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
            best = curve[-1] if best is None else max(best, curve[-1])
    return epochs, best


def replay_table(rows: list[dict], args: argparse.Namespace) -> tuple[str, int]:
    pool = list({k: v for r in rows if r["variant"] in UNPRUNED for k, v in r["curves"].items()}.values())
    rng = random.Random(0)
    draws = [rng.sample(pool, args.trials) for _ in range(args.draws)]
    lines = ["| pruner | epochs vs unpruned (mean) | draws reaching the unpruned best | mean best val acc gap | "
             "draws with no trial complete |", "| --- | --- | --- | --- | --- |"]
    for name, spec in replay_pruners().items():
        ratios, gaps, empty = [], [], 0
        for index, draw in enumerate(draws):
            epochs, best = replay(make_pruner(spec), draw, f"replay-{index}")
            ratios.append(epochs / (args.trials * args.epochs))
            if best is None:
                empty += 1
                continue
            gaps.append(best - max(curve[-1] for curve in draw))
        gap = f"{statistics.mean(gaps):+.4f}" if gaps else "-"
        lines.append(f"| {name} | {statistics.mean(ratios):.2f}x | {sum(g >= 0 for g in gaps) / len(draws):.0%} | {gap} | "
                     f"{empty / len(draws):.0%} |")
    return "\n".join(lines), len(pool)


def _baseline(rows: list[dict], seed: int) -> dict:
    return next(r for r in rows if r["variant"] == BASELINE and r["seed"] == seed)


def _retrained(row: dict, index: int) -> float:
    """Mean over the retraining seeds of val acc (index 0) or test accuracy (1)."""
    return statistics.mean(score[index] for score in row["retrained"])


def per_seed_table(rows: list[dict]) -> str:
    lines = ["| seed | variant | trials complete / pruned | epochs trained | vs unpruned TPE | best val acc | "
             "chosen config re-trained: val acc / test acc | wall s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['seed']} | {r['variant']} | {r['complete']} / {r['pruned']} | {r['epochs']} | "
              f"{r['epochs'] / _baseline(rows, r['seed'])['epochs']:.2f}x | {r['best']:.4f} | "
              f"{_retrained(r, 0):.4f} / {_retrained(r, 1):.4f} | {r['wall']:.0f} |" for r in rows]
    return "\n".join(lines)


def mean_table(rows: list[dict], names: list[str]) -> str:
    lines = ["| variant | epochs trained (mean) | vs unpruned TPE | best val acc (mean) | best >= unpruned | "
             "chosen config re-trained: val acc | test acc |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        ratio = statistics.mean(r["epochs"] / _baseline(rows, r["seed"])["epochs"] for r in mine)
        same = sum(r["best"] >= _baseline(rows, r["seed"])["best"] for r in mine)
        lines.append(f"| {name} | {statistics.mean(r['epochs'] for r in mine):.1f} | {ratio:.2f}x | "
                     f"{statistics.mean(r['best'] for r in mine):.4f} | {same} of {len(mine)} seeds | "
                     f"{statistics.mean(_retrained(r, 0) for r in mine):.4f} | "
                     f"{statistics.mean(_retrained(r, 1) for r in mine):.4f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict], names: list[str], images: int = 360) -> list[str]:
    """Per pruned variant, within a third of the unpruned epochs: did it reach the unpruned best value on every
    seed (strict), and are the configurations it chose as good when trained again (mean val and test accuracy
    no more than one image below the unpruned sweep's: the resolution of either split)?"""
    lines = []
    for name in names:
        if name == BASELINE or name.startswith("random"):
            continue
        mine = [r for r in rows if r["variant"] == name]
        ratio = statistics.mean(r["epochs"] / _baseline(rows, r["seed"])["epochs"] for r in mine)
        gap = statistics.mean(r["best"] - _baseline(rows, r["seed"])["best"] for r in mine)
        same = all(r["best"] >= _baseline(rows, r["seed"])["best"] for r in mine)
        val_gap, test_gap = (statistics.mean(_retrained(r, i) - _retrained(_baseline(rows, r["seed"]), i) for r in mine)
                             for i in (0, 1))
        retrained_ok = min(val_gap, test_gap) >= -1 / images
        cheap = ratio <= 1 / 3
        lines.append(f"- {name}: {ratio:.2f}x the unpruned epochs; best value {gap:+.4f} vs unpruned on average "
                     f"(at least as good on every seed: {'yes' if same else 'no'}); its chosen configurations re-trained: "
                     f"val acc {val_gap:+.4f}, test acc {test_gap:+.4f} vs the unpruned sweep's. Goal, strictly: "
                     f"{'met' if cheap and same else 'not met'}; "
                     f"on re-training: {'met' if cheap and retrained_ok else 'not met'}.")
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
    preset = OmegaConf.load(PRESET)  # by default, the budget a user of the preset gets
    parser.add_argument("--trials", type=int, default=preset.hydra.sweeper.n_trials)
    parser.add_argument("--epochs", type=int, default=preset.trainer.max_epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="studies run side by side (epoch counts do not depend on it)")
    parser.add_argument("--variants", nargs="+", default=["default"],
                        help=f"default ({', '.join(DEFAULT_VARIANTS)}), all, or names of {list(VARIANTS)}")
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=[100, 101, 102],
                        help="training seeds each study's chosen configuration is trained again with")
    parser.add_argument("--draws", type=int, default=200, help="random orders of the unpruned curves replayed per pruner")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    names = {"default": DEFAULT_VARIANTS, "all": list(VARIANTS)}.get(args.variants[0], args.variants)
    if unknown := set(names) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    names = [BASELINE, *(n for n in names if n != BASELINE)]  # every ratio is taken against it
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labline-bench-sweep-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_variant, name, seed, args, Path(tmp)) for seed in args.seeds for name in names]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(rows[-1], flush=True)
    print(write_section(rows, names, args, time.perf_counter() - start))


def write_section(rows: list[dict], names: list[str], args: argparse.Namespace, seconds: float) -> str:
    """The tables and verdicts, printed and written as this benchmark's section of ``--out``."""
    order = {n: i for i, n in enumerate(DEFAULT_VARIANTS + list(VARIANTS))}
    names = sorted(names, key=order.get)
    rows = sorted(rows, key=lambda r: (r["seed"], order[r["variant"]]))
    replayed, pool = replay_table(rows, args)
    seeds = ", ".join(map(str, args.seeds))
    body = (f"Search space of `conf/hparams_search/digits_cnn.yaml` (optimizer, log lr, log weight decay, dropout, batch\n"
            f"size) on the digits hold-out split; {args.trials} trials of at most {args.epochs} epochs each (early stopping\n"
            f"as configured), seeds {seeds} (each seed is both the sampler's and the training seed), {args.threads} torch\n"
            f"thread(s), trials in-process, {args.jobs} stud{'y' if args.jobs == 1 else 'ies'} at a time; measured "
            f"{time.strftime('%Y-%m-%d')} in {seconds:.0f} s\n"
            f"(5-minute load average at the end {os.getloadavg()[1]:.1f} on 2 shared cores: wall times are indicative, epochs\n"
            f"and accuracies do not depend on load). Pruner settings are the preset's (successive halving) and labline's\n"
            f"defaults (hyperband, median; docs/sweeps.md). Epochs trained is the sum over all trials; the goal is the\n"
            f"unpruned best accuracy for at most a third of its epochs. Each study's chosen configuration is then trained\n"
            f"again with seeds {', '.join(map(str, args.retrain_seeds))} (val acc at the best epoch, and test accuracy: the\n"
            f"test split is untouched while tuning), because a best value is the maximum of noisy measurements (one of\n"
            f"the 360 validation images is 0.0028).\n\n"
            f"Mean over seeds:\n\n{mean_table(rows, names)}\n\n" + "\n".join(verdicts(rows, names)) +
            f"\n\nPer seed:\n\n{per_seed_table(rows)}\n\n"
            f"Replay of the {pool} distinct {args.epochs}-epoch curves the unpruned variants trained, {args.trials} at a\n"
            f"time in {args.draws} random orders (i.i.d. trials as in random search; the unpruned best is the draw's best\n"
            f"final val acc):\n\n{replayed}")
    record(Path(args.out), body)
    return body


if __name__ == "__main__":
    main()
