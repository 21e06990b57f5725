"""labline's own published numbers as pipelines: every measured row of a results table is one DVC stage.

``pipelines/results/results.yaml`` names each row's runs (overrides composed from conf/, like ``labline
train``), the seeds, and the ensembles built from them; ``labline measure ROW`` (the stage's command) runs
them in this process with those seeds and writes ``pipelines/results/metrics/ROW.json``: every numeric
test value of every run, the MLflow run ids, the wall time, the commit and the date. ``labline docs``
renders the tables from those files (``reporting/results_doc.py``), so a table can never disagree with its
numbers, and marks a row stale when DVC says the code or config it depends on changed since it was measured.
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
from labline.tracking.provenance import git_state

FOLDER = Path("pipelines") / "results"
SPEC = FOLDER / "results.yaml"
METRICS = FOLDER / "metrics"
EXPERIMENT = "results"


@dataclass(frozen=True)
class Row:
    """One measured row: named runs (each a list of overrides), repeated per seed, and ensembles of them."""

    name: str
    runs: dict[str, list[str]]
    seeds: list[int]
    ensembles: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_spec(root: Path) -> dict[str, Any]:
    path = root / SPEC
    if not path.is_file():
        raise ConfigError(str(path), "not found", "a checkout of labline has pipelines/results/results.yaml")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _flat(items: list[Any]) -> list[str]:
    """Overrides with YAML aliases spliced in (``[experiment=x, *budget]`` nests the aliased list)."""
    return [str(o) for item in items for o in (_flat(item) if isinstance(item, list) else [item])]


def row_spec(spec: dict[str, Any], name: str) -> Row:
    rows = spec.get("rows", {})
    if name not in rows:
        raise ConfigError("row", f"unknown results row '{name}'", sorted(rows))
    item, common = rows[name], _flat(spec.get("common", []))
    return Row(name, {k: [*common, *_flat(v)] for k, v in item["runs"].items()}, list(item.get("seeds", [0])),
               dict(item.get("ensembles", {})))


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def measure(root: Path, name: str) -> Path:
    """Run one row's trainings (and ensembles) with its seeds; returns the metrics file written."""
    from labline.runs.dispatch import run_task  # here: `labline docs` reads this module and must not import Lightning
    from labline.studies.ensemble import run_ensemble

    row = row_spec(load_spec(root), name)
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
    state = git_state(root)
    record = {"row": name, "seeds": row.seeds, "values": values, "run_ids": run_ids,
              "wall_s": round(time.perf_counter() - started, 1), "commit": state.get("git_commit", "unknown"),
              "date": datetime.date.today().isoformat()}
    path = root / METRICS / f"{name}.json"
    write_json(record, path)
    return path


def measured(root: Path, spec: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each row's metrics file, or None where the row has not been measured."""
    return {name: (read_json(root / METRICS / f"{name}.json", "run `make results`")
                   if (root / METRICS / f"{name}.json").is_file() else None) for name in spec.get("rows", {})}


def stale_rows(root: Path) -> set[str]:
    """Rows whose stage DVC reports changed (code, conf or params edited since the row was measured)."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            status = repo.status(targets=[str(root / FOLDER / "dvc.yaml")])
    except LockError:
        raise ConfigError(str(FOLDER), "DVC is busy: another dvc command (a `make results`?) holds its lock",
                          "wait for it to finish, then run `labline docs` again") from None
    return {stage.rsplit("@", 1)[1] for stage in status if "@" in stage}
