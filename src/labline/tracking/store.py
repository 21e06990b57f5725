"""The project's MLflow store: one SQLite file at the project root.

Several processes opening a brand-new SQLite store at once can corrupt its
schema for good, so the first touch (schema creation / migration and the
experiment) happens under an exclusive file lock; later opens find it ready.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labline.locks import file_lock
from labline.paths import project_root

# ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI (for subprocesses). A value labline itself
# set in this process must not count as the user's choice, or a later project root would be ignored.
_SET_HERE: set[str] = set()


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if the user set it, else the config's, else ``sqlite:///<project>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env not in _SET_HERE:
        return env
    return configured or f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_location(experiment_name: str) -> str:
    return (project_root() / "mlartifacts" / experiment_name).as_uri()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(uri.removeprefix("sqlite:///") + ".lock")):
        yield


def ensure_experiment(experiment_name: str, configured_uri: str | None = None) -> tuple[str, str]:
    """Create the store and the experiment once; returns ``(tracking_uri, experiment_id)``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(configured_uri)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            experiment_id = client.create_experiment(experiment_name, artifact_location=artifact_location(experiment_name))
        else:
            experiment_id = experiment.experiment_id
    _SET_HERE.add(uri)
    mlflow.set_tracking_uri(uri)
    return uri, experiment_id
