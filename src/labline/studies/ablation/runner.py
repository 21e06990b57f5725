"""Running an ablation study: compose and check every run, open the study's parent, train what has not finished.

Everything a user can get wrong (a component override that does not compose, a value a builder rejects,
a component whose removal changes nothing) is reported before the parent run exists. Runs are ordered
seed by seed, so an interrupted study already holds complete paired comparisons for its first seeds.

A study is identified by its name and the hash of its full model's config: more seeds, folds or
components extend the same parent (only new runs train); a different full model or budget starts a
new parent. With ``workers > 1`` the runs train in that many spawned processes, which nest their runs
under the parent through the ``mlflow.parentRunId`` tag; ``workers x threads`` must fit the cores. With
``backend=slurm`` every pending run is one task of a SLURM job array (``studies.cluster.slurm``): the table at
the end is built from MLflow as always, so it is the same as in-process for the same seeds.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.config import compose_config, to_plain
from labline.core.errors import ConfigError
from labline.data.pipeline import fold_count, is_resampling, with_fold
from labline.reporting.console import console
from labline.runs.check import check_build
from labline.runs.context import RunContext
from labline.runs.records import config_hash
from labline.studies.ablation.spec import FULL, AblationSpec, Variant
from labline.studies.ablation.table import PLAN, AblationTable, from_mlflow, markdown, write
from labline.studies.cluster import slurm
from labline.studies.parents import child_tags, study_parent
from labline.tracking.lifecycle import RunHandle

ARRAY_TAG = "slurm.array"


@dataclass
class PlannedRun:
    variant: str
    seed: int
    fold: int | None
    cfg: DictConfig
    config_hash: str

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}" + ("" if self.fold is None else f"/fold{self.fold}")

    def tags(self, parent: RunHandle, study: str) -> dict[str, str]:
        return child_tags(parent, ablation=study, ablation_variant=self.variant, fold=str(self.fold))


def _compose(spec: AblationSpec, variant: Variant) -> DictConfig:
    try:
        return compose_config(spec.variant_overrides(variant))
    except ConfigError as err:
        where = {0: "overrides", 1: f"components.{variant.removed[0]}"}.get(len(variant.removed), f"variant {variant.name}")
        raise ConfigError(f"{where}: {err.key}", err.problem, err.valid) from None


def _check_budget(spec: AblationSpec, full: DictConfig) -> None:
    threads, cores = int(full.get("threads", 1)), os.cpu_count() or 1
    if spec.workers > 1 and spec.workers * threads > cores:
        raise ConfigError("workers", f"{spec.workers} workers x threads={threads} exceed the {cores} cores",
                          f"threads={max(1, cores // spec.workers)} (a training override) or fewer workers")
    if spec.metric.startswith("test/") and not full.get("test_after_fit", True):
        raise ConfigError("metric", f"{spec.metric} is a test metric, but test_after_fit is false", "a val/ metric")


def plan(spec: AblationSpec, root: Path) -> tuple[DictConfig, list[PlannedRun]]:
    """The full model's config and every run of the study (seed-major), each with its config hash."""
    variants = {v.name: _compose(spec, v) for v in spec.variants()}
    full = variants[FULL]
    _check_budget(spec, full)
    folds: list[int | None] = list(range(fold_count(full, root))) if is_resampling(full) else [None]
    seen: dict[str, str] = {}
    for name, cfg in variants.items():
        same = seen.setdefault(config_hash(to_plain(cfg)), name)
        if same != name:
            raise ConfigError("components", f"variants {same} and {name} compose the same config",
                              "overrides that change what the component controls")
    runs = []
    for seed in spec.seeds or []:
        for fold in folds:
            for name, cfg in variants.items():
                run_cfg = cfg.copy() if fold is None else with_fold(cfg, fold)
                run_cfg.seed = seed
                run_cfg.run_name = f"{spec.name}-{name}-seed{seed}" + ("" if fold is None else f"-fold{fold}")
                runs.append(PlannedRun(name, seed, fold, run_cfg, config_hash(to_plain(run_cfg))))
    return full, runs


def check_runs(runs: list[PlannedRun], root: Path) -> None:
    """Build each variant once, so a bad value fails before the parent opens."""
    first: dict[str, PlannedRun] = {}
    for run in runs:
        first.setdefault(run.variant, run)
    for run in first.values():
        try:
            check_build(run.cfg, root)
        except ConfigError as err:
            raise ConfigError(f"variant {run.variant}: {err.key}", err.problem, err.valid) from None


def plan_record(spec: AblationSpec, runs: list[PlannedRun], n_folds: int | None) -> dict[str, Any]:
    """What ``labline report`` needs to rebuild the table from MLflow alone."""
    return {"name": spec.name, "design": spec.design, "metric": spec.metric, "mode": spec.mode,
            "components": list(spec.components), "seeds": spec.seeds, "folds": n_folds,
            "variants": [{"name": v.name, "removed": list(v.removed)} for v in spec.variants()],
            "runs": [{"variant": r.variant, "seed": r.seed, "fold": r.fold, "config_hash": r.config_hash} for r in runs]}


def train_planned(config: dict[str, Any], out_dir: str, root: str, tags: dict[str, str]) -> str:
    """One run, in this process, a spawned worker or a SLURM task (each imports torch itself and owns its thread
    count); any task, Lightning or ``runner`` (scikit-learn baselines ablate like networks)."""
    from labline.runs.dispatch import run_task

    return run_task(OmegaConf.create(config), Path(out_dir), Path(root), context=RunContext(tags, quiet=True))["run_id"]


def _report(spec: AblationSpec, parent: RunHandle, done: int, total: int, run: PlannedRun, run_id: str) -> None:
    """The one line a finished run of the study prints (its training itself is quiet)."""
    value = parent.store.run_value(parent.store.get_run(run_id), spec.metric)
    console.print(f"[bold]ablation {spec.name}[/]: run {done}/{total} {run.key}: {spec.metric} "
                  f"{'-' if value is None else f'{value:.4f}'} (run {run_id})", highlight=False)


def execute(pending: list[PlannedRun], parent: RunHandle, spec: AblationSpec, out_dir: Path, root: Path) -> None:
    if spec.workers == 1:
        for i, run in enumerate(pending, 1):
            run_id = train_planned(to_plain(run.cfg), str(out_dir / run.key), str(root), run.tags(parent, spec.name))
            _report(spec, parent, i, len(pending), run, run_id)
        return
    with ProcessPoolExecutor(spec.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_planned, to_plain(run.cfg), str(out_dir / run.key), str(root),
                               run.tags(parent, spec.name)): run for run in pending}
        for i, future in enumerate(as_completed(futures), 1):
            if future.exception() is not None:
                pool.shutdown(cancel_futures=True)
                future.result()
            _report(spec, parent, i, len(pending), futures[future], future.result())


def _metric_key(*parts: str) -> str:
    return "/".join(re.sub(r"[^\w.\- ]", ".", p) for p in parts)


def summary_metrics(table: AblationTable) -> dict[str, float]:
    """The table as parent-run metrics (NaN cells left out), e.g. ``ablation/no_dropout/mean``."""
    values: dict[str, float] = {}
    for row in table.variants:
        for stat in ("mean", "std", "diff", "p_value"):
            values[_metric_key("ablation", row.variant, stat)] = getattr(row, stat)
    for comp in table.components:
        values[_metric_key("ablation", "effect", comp.component)] = comp.effect
    return {k: v for k, v in values.items() if not math.isnan(v)}


def execute_on_slurm(pending: list[PlannedRun], parent: RunHandle, spec: AblationSpec, out_dir: Path, root: Path,
                     settings: slurm.SlurmSettings) -> bool:
    """Every pending run as one array task; watches the array (or an earlier one still active) to its end, printing
    progress. Returns False when not waiting (``slurm.wait=false``): the same command again watches and tables."""
    import json

    import submitit

    from labline.core.paths import project_root

    folder = Path(settings.folder) if settings.folder else out_dir / "slurm"
    earlier = json.loads(parent.get().data.tags.get(ARRAY_TAG, "[]"))
    still = slurm.active([job for _, job in earlier])
    jobs = [submitit.SlurmJob(folder=Path(f), job_id=j) for f, j in earlier if j in still]
    if jobs:
        console.print(f"SLURM array {jobs[0].job_id.split('_')[0]} of this study still active: watching it")
    elif pending:
        environment = {"LABLINE_PROJECT_ROOT": str(project_root(root)),
                       **{k: os.environ[k] for k in ("MLFLOW_TRACKING_URI", "LABLINE_CONFIG_DIR") if k in os.environ}}
        jobs = slurm.submit_array(settings, folder, f"labline-ablation-{spec.name}", f"{__name__}:train_planned",
                                  [(environment, (to_plain(r.cfg), str(out_dir / r.key), str(root),
                                                  r.tags(parent, spec.name))) for r in pending])
        parent.set_tags({ARRAY_TAG: json.dumps([[str(folder), j.job_id] for j in jobs])})
    if not settings.wait:
        print("not waiting (slurm.wait=false): run the same command again to watch and write the table")
        return False
    total, seen = len(pending), [-1]

    def report() -> None:
        done = len([r for r in pending if r.config_hash in parent.finished_children()])
        if done != seen[0]:
            seen[0] = done
            console.print(f"[bold]ablation {spec.name}[/]: {done}/{total} runs finished on SLURM")

    problems = slurm.watch(jobs, report)
    if problems:
        raise RuntimeError(f"{len(problems)} SLURM task(s) failed: " + "; ".join(problems))
    return True


def run_ablation(spec: AblationSpec, root: Path, cluster: slurm.SlurmSettings | None = None,
                 resume: bool = True) -> AblationTable | None:
    """Plan, check, run what is missing under the study's parent (here, or on SLURM with ``cluster``), then write
    and log the table (None: the SLURM array goes on without this command). ``resume=False`` opens a new parent
    and trains every run, for a measurement of the code as it is now (finished runs may come from older code)."""
    full, runs = plan(spec, root)
    check_runs(runs, root)
    folds = {r.fold for r in runs}
    n_folds = None if folds == {None} else len(folds)
    tags = {"role": "ablation", "ablation": spec.name, "study_key": config_hash(to_plain(full))}
    with study_parent(full, root, f"ablation-{spec.name}", to_plain(full), tags, reopen=lambda r: resume) as parent:
        parent.log_dict(plan_record(spec, runs, n_folds), PLAN)
        parent.log_text(OmegaConf.to_yaml(OmegaConf.create(spec.as_dict())), "ablation/spec.yaml")
        done = parent.finished_children()
        pending = [r for r in runs if r.config_hash not in done]
        console.print(f"[bold]ablation {spec.name}[/] ({spec.design}): {len(runs)} runs planned, "
                             f"{len(runs) - len(pending)} already finished, {len(pending)} to run; "
                             f"MLflow parent run {parent.run_id}")
        out_dir = root / "outputs" / "ablation" / spec.name
        if cluster is not None:
            if not execute_on_slurm(pending, parent, spec, out_dir, root, cluster):
                parent.keep_open()
                return None
        else:
            execute(pending, parent, spec, out_dir, root)
        parent.close_stale_children()
        table = from_mlflow(parent.store, parent.run_id)
        folder = write(table, root / full.paths.reports / "ablation" / spec.name)
        parent.log_artifacts(folder, "ablation")
        parent.log_metrics(summary_metrics(table))
    print(markdown(table))
    print(f"written to {folder} and logged to MLflow parent run {parent.run_id}")
    return table
