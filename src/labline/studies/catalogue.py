"""``labline runs``: the runs of the current store at a glance, so ``ensemble``, ``reproduce`` and
``backbone.weights`` have their ids at hand without opening the MLflow UI.

Each row is one run: its full id (what the other commands take), name, kind (a training, a sweep trial, an
ablation variant, a study's parent, an ensemble...), dataset, task, status and its headline metric: test
accuracy when it was tested, else the metric a parent summarises (a sweep's best value, a cross-validation's
fold mean), else its monitored validation metric at the best epoch. Newest first. ``--ids`` prints the ids
alone, one per line, for the shell: ``labline ensemble $(labline runs --tag dataset=digits --status finished --ids)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labline.core.errors import ConfigError
from labline.tracking.store import Store

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
HEADLINE = ("test/acc", "best_value", "val/acc_mean", "val/loss_mean")


@dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str
    kind: str
    dataset: str
    task: str
    status: str
    metric: str
    value: float | None
    start_time: int


def kind(tags: dict[str, str]) -> str:
    """What made the run, from the tags labline records."""
    if tags.get("labline.kind") == "optuna-study":
        return "sweep"
    if "optuna_trial" in tags:
        return f"trial {tags['optuna_trial']}"
    role = tags.get("role")
    if role == "ablation":
        return "ablation"
    if "ablation_variant" in tags:
        return f"variant {tags['ablation_variant']}"
    if role in ("crossval", "ensemble"):
        return role
    if tags.get("refit") == "true":
        return "refit"
    if tags.get("fold") not in (None, "None"):
        return f"fold {tags['fold']}"
    if "reproduced_from" in tags:
        return "reproduction"
    return "dvc stage" if tags.get("pipeline") == "dvc" else "training"


def _task(run: Any) -> str:
    params = run.data.params
    target = params.get("task.estimator._target_") or params.get("task._target_") or params.get("method", "")
    return target.rsplit(".", 1)[-1]


def _headline(store: Store, run: Any) -> tuple[str, float | None]:
    """A summary metric it logged, else (an untested trial or fold) its monitored metric at the best epoch."""
    metrics = run.data.metrics
    for key in HEADLINE:
        if key in metrics:
            return key, metrics[key]
    monitor = run.data.params.get("task.monitor")
    if monitor and run.data.tags.get("best_epoch") not in (None, "None"):
        return monitor, store.run_value(run, monitor)
    return "", None


def _row(store: Store, run: Any) -> RunRow:
    metric, value = _headline(store, run)
    tags = run.data.tags
    return RunRow(run.info.run_id, run.info.run_name or "", kind(tags), tags.get("dataset", ""), _task(run),
                  run.info.status, metric, value, run.info.start_time or 0)


def _filter(status: str | None, tags: list[str], extra: str | None) -> str:
    """One MLflow filter (MLflow's grammar joins clauses with AND only)."""
    clauses = []
    if status:
        if status.upper() not in STATUSES:
            raise ConfigError("--status", f"unknown status '{status}'", STATUSES)
        clauses.append(f"attributes.status = '{status.upper()}'")
    for tag in tags:
        key, eq, value = tag.partition("=")
        if not eq or not key:
            raise ConfigError("--tag", f"'{tag}' is not KEY=VALUE", "e.g. --tag dataset=digits")
        clauses.append(f"tags.`{key}` = '{value}'")
    if extra:
        clauses.append(extra)
    return " and ".join(clauses)


def list_runs(store: Store, experiment: str | None = None, status: str | None = None, tags: list[str] | None = None,
              filter_string: str | None = None, limit: int = 20) -> list[RunRow]:
    """The newest ``limit`` runs matching the filters (every experiment unless one is named)."""
    if limit < 1:
        raise ConfigError("--limit", f"must be a positive integer, got {limit}")
    ids = None
    if experiment is not None:
        names = {store.experiment_name(i): i for i in store.experiment_ids()}
        if experiment not in names:
            raise ConfigError("--experiment", f"no experiment '{experiment}' in {store.uri}", sorted(names) or "none yet")
        ids = [names[experiment]]
    runs = store.search(_filter(status, tags or [], filter_string), ids)
    return [_row(store, run) for run in sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)[:limit]]


def print_runs(rows: list[RunRow], store: Store) -> None:
    from rich.table import Table

    from labline.reporting.console import console

    if not rows:
        console.print(f"no runs in {store.uri}")
        return
    table = Table(title=f"runs in {store.uri} (newest first)")
    for column in ("run id", "name", "kind", "data", "task", "status", "headline"):
        table.add_column(column, no_wrap=column == "run id")
    for row in rows:
        headline = "" if row.value is None else f"{row.metric} {row.value:.4f}"
        table.add_row(row.run_id, row.name, row.kind, row.dataset, row.task, row.status, headline)
    console.print(table)
