"""One MLflow run per training, started with the fluent API so it can nest
under a sweep or ablation parent run."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labline.config import flatten
from labline.interrupts import Interrupted
from labline.tracking import provenance
from labline.tracking.store import ensure_experiment

MAX_PARAM_CHARS = 250
PARENT_ENV = "LABLINE_PARENT_RUN_ID"


class MlflowTracker:
    """Records config, provenance, per-epoch curves and artifacts of one run."""

    def __init__(self, experiment_name: str = "labline", tracking_uri: str | None = None, log_checkpoint: bool = True):
        self.experiment_name = experiment_name
        self.configured_uri = tracking_uri
        self.log_checkpoint = log_checkpoint
        self.run_id: str | None = None

    @contextmanager
    def start(self, run_name: str, config: dict[str, Any], tags: dict[str, str], root: Path,
              run_id: str | None = None) -> Iterator[MlflowTracker]:
        """Open (or, with ``run_id``, re-open) a run; any exception marks it FAILED, Ctrl-C KILLED."""
        import mlflow

        _, experiment_id = ensure_experiment(self.experiment_name, self.configured_uri)
        nested = mlflow.active_run() is not None  # also when re-opening a run under an active sweep/ablation parent
        # Worker processes of a parallel sweep/ablation nest under the parent named here
        # (never MLFLOW_RUN_ID: children would then write into the parent itself).
        parent = None if nested or run_id else os.environ.get(PARENT_ENV)
        # A new run is created with its tags (config hash, sweep trial, ablation variant, ...) in one write, so a
        # process killed right after creating it leaves a RUNNING run that its study can still identify and close.
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                               run_name=None if run_id else run_name, nested=nested, parent_run_id=parent,
                               tags=None if run_id else {k: str(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        try:
            if run_id is None:
                self._record_start(config, root)
            yield self
        except (KeyboardInterrupt, Interrupted) as exc:
            mlflow.set_tag("stop_reason", str(exc) or "KeyboardInterrupt")
            mlflow.end_run(status="KILLED")
            raise
        except BaseException as exc:
            mlflow.set_tag("failure_reason", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run(status="FAILED")
            raise
        mlflow.end_run(status="FINISHED")

    def _record_start(self, config: dict[str, Any], root: Path) -> None:
        import mlflow

        params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(config).items()}
        mlflow.log_params(params)
        versions = {f"version.{k}": v for k, v in provenance.package_versions().items()}
        mlflow.set_tags({**provenance.git_state(root), **versions})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
            mlflow.log_artifact(str(path))

    def mark_killed(self, run_id: str) -> None:
        """A run whose process died before its first checkpoint: record it as KILLED, not RUNNING."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")

    def logged_steps(self, key: str) -> set[int]:
        from mlflow.tracking import MlflowClient

        return {m.step for m in MlflowClient().get_metric_history(self.run_id, key)}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics(metrics, step=step)

    def log_epochs(self, rows: list[dict[str, float]]) -> None:
        """Several epochs' metrics (each row has an ``epoch``, the x-axis) in one write."""
        import time

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(row["epoch"]))
                   for row in rows for key, value in row.items() if key != "epoch"]
        MlflowClient().log_batch(self.run_id, metrics=metrics)

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dict(self, obj: Any, name: str) -> None:
        import mlflow

        mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True), name)
