"""labline's own published numbers as pipelines: every measured row of a results table is one DVC stage.

``pipelines/results/results.yaml`` names each row's runs (overrides composed from conf/, like ``labline
train``), the seeds, and the ensembles built from them; or one ablation study (the words of ``labline
ablate``); or (``compared``) another pipeline's comparison file. ``labline measure ROW`` (the stage's
command) runs them in this process with those seeds and writes ``pipelines/results/metrics/ROW.json``: every
numeric test value of every run, the MLflow run ids, the wall time, the commit and the date (and, for an
ablation, its table as the study itself renders it). ``labline docs`` renders the tables from those files
(``reporting/results_doc.py``), so a table can never disagree with its numbers, and marks a row stale when
DVC says the code or config it depends on changed since it was measured.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labline.core.config import compose_config
from labline.core.errors import ConfigError
from labline.core.io import read_json, write_json
from labline.tracking.provenance import git_state, machine

FOLDER = Path("pipelines") / "results"
SPEC = FOLDER / "results.yaml"
METRICS = FOLDER / "metrics"
EXPERIMENT = "results"


@dataclass(frozen=True)
class Row:
    """One measured row: named runs (each a list of overrides), repeated per seed, and ensembles of them; or
    an ablation study (``ablation``: the words of ``labline ablate``, seeds included)."""

    name: str
    runs: dict[str, list[str]]
    seeds: list[int]
    ensembles: dict[str, dict[str, Any]] = field(default_factory=dict)
    ablation: list[str] = field(default_factory=list)
    # the comparison file of another DVC pipeline that this row reads (its stage depends on it, so `dvc repro`
    # runs that pipeline first): ``{name: {"per_seed": {seed: value}, ...}}`` as ``labline distill-compare`` writes
    compare: str | None = None


def load_spec(root: Path) -> dict[str, Any]:
    path = root / SPEC
    if not path.is_file():
        raise ConfigError(str(path), "not found", "a checkout of labline has pipelines/results/results.yaml")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def all_rows(spec: dict[str, Any]) -> dict[str, Any]:
    """``rows`` (one stage each through the foreach of pipelines/results/dvc.yaml) and ``compared`` (rows that
    read another pipeline's comparison: a stage of their own, depending on that file)."""
    return {**spec.get("rows", {}), **spec.get("compared", {})}


def _flat(items: list[Any]) -> list[str]:
    """Overrides with YAML aliases spliced in (``[experiment=x, *budget]`` nests the aliased list)."""
    return [str(o) for item in items for o in (_flat(item) if isinstance(item, list) else [item])]


def row_spec(spec: dict[str, Any], name: str) -> Row:
    rows = all_rows(spec)
    if name not in rows:
        raise ConfigError("row", f"unknown results row '{name}'", sorted(rows))
    item, common = rows[name], _flat(spec.get("common", []))
    ablation = [*_flat(item["ablation"]), *common] if "ablation" in item else []
    return Row(name, {k: [*common, *_flat(v)] for k, v in item.get("runs", {}).items()},
               list(item.get("seeds", [0])), dict(item.get("ensembles", {})), ablation, item.get("compare"))


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _record(row: Row, seeds: list[int], values: dict[str, dict[str, list[float]]], run_ids: dict[str, list[str]],
            started: float | None, root: Path, **extra: Any) -> Path:
    """``started`` None: the row's trainings ran elsewhere (another pipeline's stages), so no wall time."""
    state = git_state(root)
    wall = None if started is None else round(time.perf_counter() - started, 1)
    record = {"row": row.name, "seeds": seeds, "values": values, "run_ids": run_ids, "wall_s": wall,
              "commit": state.get("git_commit", "unknown"), "date": datetime.date.today().isoformat(),
              "machine": machine(), **extra}
    path = root / METRICS / f"{row.name}.json"
    write_json(record, path)
    return path


def _measure_ablation(row: Row, root: Path) -> Path:
    """The study ``labline ablate`` would run; values per variant (one per seed and fold), and its table."""
    from labline.studies.ablation.runner import run_ablation
    from labline.studies.ablation.spec import load
    from labline.studies.ablation.table import markdown

    spec, _ = load([*row.ablation, f"logger.experiment_name={EXPERIMENT}"])
    started = time.perf_counter()
    table = run_ablation(spec, root, resume=False)
    values: dict[str, dict[str, list[float]]] = {}
    run_ids: dict[str, list[str]] = {}
    for run in table.runs:
        if run.value is not None:
            values.setdefault(run.variant, {}).setdefault(spec.metric, []).append(run.value)
            run_ids.setdefault(run.variant, []).append(str(run.run_id))
    return _record(row, spec.seeds, values, run_ids, started, root, table=markdown(table),
                   command=" ".join(["labline ablate", *row.ablation]))


def _read_compare(row: Row, root: Path) -> Path:
    """A pipeline's comparison, as this row's values: every run's test accuracy per seed, and the model's size.
    The pipeline's trainings ran in its own stages, so the wall time is theirs, not this command's (null)."""
    compared = read_json(root / str(row.compare), f"run `dvc repro pipelines/results/dvc.yaml:{row.name}`")
    values: dict[str, dict[str, list[float]]] = {}
    run_ids: dict[str, list[str]] = {}
    for key, summary in compared.items():
        if isinstance(summary, dict) and "per_seed" in summary:
            values[key] = {"test/acc": [float(v) for v in summary["per_seed"].values()],
                           **{k: [float(summary[k])] for k in ("params", "flops") if k in summary}}
            run_ids[key] = list(summary.get("run_ids", {}).values())
    seeds = sorted({int(seed) for summary in compared.values() if isinstance(summary, dict)
                    for seed in summary.get("per_seed", {})})
    return _record(row, seeds, values, run_ids, None, root, source=row.compare)


def measure(root: Path, name: str) -> Path:
    """Run one row's trainings (and ensembles) with its seeds; returns the metrics file written."""
    from labline.runs.dispatch import run_task  # here: `labline docs` reads this module and must not import Lightning
    from labline.studies.ensemble import run_ensemble

    row = row_spec(load_spec(root), name)
    if row.ablation:
        return _measure_ablation(row, root)
    if row.compare:
        return _read_compare(row, root)
    configs = {key: [compose_config([*overrides, f"seed={seed}", f"logger.experiment_name={EXPERIMENT}"],
                                    conf=root / "conf") for seed in row.seeds]
               for key, overrides in row.runs.items()}  # every override is checked before the first run trains
    started = time.perf_counter()
    values: dict[str, dict[str, list[float]]] = {}
    run_ids: dict[str, list[str]] = {}
    for index, seed in enumerate(row.seeds):
        for key, cfgs in configs.items():
            result = run_task(cfgs[index], root / "outputs" / "results" / name / f"{key}-seed{seed}", root)
            run_ids.setdefault(key, []).append(result["run_id"])
            for metric, value in _numbers(result).items():
                values.setdefault(key, {}).setdefault(metric, []).append(value)
        for key, ensemble in row.ensembles.items():
            members = [run_ids[member][-1] for member in ensemble["members"]]
            result = run_ensemble(members, None, ensemble.get("method", "average"), ensemble.get("metric"), root,
                                  run_name=f"results-{name}-{key}-seed{seed}")
            run_ids.setdefault(key, []).append(result["run_id"])
            for metric, value in _numbers(result).items():
                values.setdefault(key, {}).setdefault(metric, []).append(value)
    return _record(row, row.seeds, values, run_ids, started, root)


def measured(root: Path, spec: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each row's metrics file, or None where the row has not been measured."""
    return {name: (read_json(root / METRICS / f"{name}.json", "run `make results`")
                   if (root / METRICS / f"{name}.json").is_file() else None) for name in all_rows(spec)}


def stale_rows(root: Path, spec: dict[str, Any]) -> set[str]:
    """Rows whose stage DVC reports changed (code, conf or params edited since the row was measured)."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            status = repo.status(targets=[str(root / FOLDER / "dvc.yaml")])
    except LockError:
        raise ConfigError(str(FOLDER), "DVC is busy: another dvc command (a `make results`?) holds its lock",
                          "wait for it to finish, then run `labline docs` again") from None
    rows = all_rows(spec)  # a foreach stage is row@NAME, a compared row's stage is NAME
    return {name for stage in status if (name := stage.rsplit("@", 1)[-1].rsplit(":", 1)[-1]) in rows}
