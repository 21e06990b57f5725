"""MLflow parent runs that group a study's runs (cross-validation folds, ablation variants) and let it resume.

The parent is created and closed with the client API rather than held as the active fluent run:
each child names its parent with the ``mlflow.parentRunId`` tag. Children therefore nest the same way
in this process and in worker processes, and a child that re-opens its own interrupted run (training's
SIGKILL resume) does not collide with an active parent. A parent killed with SIGKILL stays RUNNING
until the next invocation of the same study re-opens it; that invocation skips the children that
already FINISHED, matched by their ``config_hash`` tag.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from labline.building import build
from labline.config import flatten
from labline.interrupts import Interrupted
from labline.tracking import provenance
from labline.tracking.store import ensure_experiment
from labline.tracking.tracker import MAX_PARAM_CHARS, PARENT_ENV

PARENT_TAG = "mlflow.parentRunId"
MLFLOW_BATCH = 100


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """Every matching run, oldest first (MLflow returns pages of at most 1000)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_value(client: MlflowClient, run: Run, metric: str) -> float | None:
    """A finished run's value of ``metric``: a per-epoch curve (``train/``, ``val/``) at the best epoch, whose
    checkpoint is the model that was kept and tested; any other metric, or any metric of a run without epochs
    (no ``best_epoch`` tag: a scikit-learn baseline logs its ``val/`` scores once), as logged."""
    best = run.data.tags.get("best_epoch")
    if best is not None and metric.startswith(("train/", "val/")):
        if best == "None":
            return None
        history = client.get_metric_history(run.info.run_id, metric)
        return next((m.value for m in history if m.step == int(best)), None)
    return run.data.metrics.get(metric)


@dataclass
class ParentRun:
    client: MlflowClient
    run_id: str
    experiment_id: str

    def child_tags(self, **tags: str) -> dict[str, str]:
        return {PARENT_TAG: self.run_id, **tags}

    def children(self) -> list[Run]:
        return search_all(self.client, [self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.run_id}'")

    def finished(self) -> dict[str, Run]:
        """Finished children by config hash; the latest wins if one config finished twice."""
        return {r.data.tags["config_hash"]: r for r in self.children()
                if r.info.status == "FINISHED" and "config_hash" in r.data.tags}

    def log_metrics(self, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + MLFLOW_BATCH])

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def close_stale(self) -> None:
        """Children still RUNNING once the study is done belong to a process that died (a sibling with the
        same config finished since): record them as KILLED so no run stays RUNNING for ever."""
        done = self.finished()
        for run in self.children():
            if run.info.status == "RUNNING" and run.data.tags.get("config_hash") in done:
                self.client.set_terminated(run.info.run_id, status="KILLED")


def check_build(cfg: DictConfig, root: Path) -> None:
    """Build a run's parts (data, model, optimizer, trainer) without training, so a value a builder rejects is
    reported before any MLflow run exists. Lightning's start-up notices are silenced: nothing trains here.

    A task with a ``runner`` builds its own parts, and checks them before its own run opens; here its runtime
    settings and data (split, fold, preprocessing) are checked."""
    from labline.training import prepare_run, setup_runtime

    if cfg.task.get("runner"):
        from labline.data.stages import load_processed

        setup_runtime(cfg)
        load_processed(cfg, root)
        return

    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepare_run(cfg, Path(tmp), root)
    finally:
        logger.setLevel(level)


def _outer_parent() -> str | None:
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active is not None else os.environ.get(PARENT_ENV)


def _record_start(client: MlflowClient, run_id: str, config: dict[str, Any], root: Path) -> None:
    """What a parent needs to be repeated, as the tracker records it for single runs."""
    params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(config).items()]
    versions = {f"version.{k}": v for k, v in provenance.package_versions().items()}
    tags = [RunTag(k, str(v)) for k, v in {**provenance.git_state(root), **versions}.items()]
    for i in range(0, max(len(params), len(tags)), MLFLOW_BATCH):
        client.log_batch(run_id, params=params[i:i + MLFLOW_BATCH], tags=tags[i:i + MLFLOW_BATCH])
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")


@contextmanager
def parent_run(cfg: DictConfig, root: Path, run_name: str, config: dict[str, Any], tags: dict[str, str],
               reopen: Callable[[Run], bool]) -> Iterator[ParentRun]:
    """Open the study's parent: the latest run carrying ``tags`` that ``reopen`` accepts, else a new one.

    Ends FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM, like a single run's tracker.
    """
    tracker = build(cfg.logger, "logger")
    uri, experiment_id = ensure_experiment(tracker.experiment_name, tracker.configured_uri)
    client = MlflowClient(uri)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    previous = [r for r in search_all(client, [experiment_id], query) if reopen(r)]
    if previous:
        run_id = previous[-1].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        outer = _outer_parent()
        run_id = client.create_run(experiment_id, run_name=run_name,
                                   tags={**tags, **({PARENT_TAG: outer} if outer else {})}).info.run_id
        _record_start(client, run_id, config, root)
    try:
        yield ParentRun(client, run_id, experiment_id)
    except (KeyboardInterrupt, Interrupted) as exc:
        client.set_tag(run_id, "stop_reason", str(exc) or "KeyboardInterrupt")
        client.set_terminated(run_id, status="KILLED")
        raise
    except BaseException as exc:
        client.set_tag(run_id, "failure_reason", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
