"""Where runs are recorded: the tracking URI, the store's client, its experiments and what can be read back.

This module is the only place that resolves the tracking URI and builds an ``MlflowClient``; everything
else in labline asks a ``Store`` (or opens a run through ``tracking.lifecycle``).

The URI is ``MLFLOW_TRACKING_URI`` when the user set it, else the logger config's ``tracking_uri``, else the
project's own SQLite file. It is read every time a store is asked for and never written back to the
environment (``mlflow.set_tracking_uri`` would export it, and a later project root or a user's variable in
a worker process would then be ignored).

Several processes opening a brand-new SQLite store at once can corrupt its schema for good, so the first
touch (schema creation / migration and the experiment) happens under an exclusive file lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labline.core.errors import ConfigError
from labline.core.locks import file_lock
from labline.core.paths import project_root
from labline.core.values import writable

MLFLOW_BATCH = 100
PARENT_TAG = "mlflow.parentRunId"
# Artifacts are small (configs, curves, plots, checkpoints of small models): one download bar per file
# would bury the tables labline prints.
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
LOCAL_SCHEMES = ("sqlite:///", "file:")
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, an assistant), where runs are
# one toggle away; labline's experiments are model training.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


# What MLflow can track into: a SQLite file, a tracking server, a database (SQLAlchemy dialect, any driver).
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks")
URI_ENV = "MLFLOW_TRACKING_URI"


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if the user set it, else the config's, else ``sqlite:///<project>/mlflow.db``;
    a URI MLflow could not use is a one-line ``ConfigError`` before any run exists."""
    if os.environ.get(URI_ENV):
        return check_uri(os.environ[URI_ENV], URI_ENV)
    if configured:
        return check_uri(configured, "logger.tracking_uri")
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def check_uri(uri: str, key: str) -> str:
    """Refuse, in one line naming ``key``, a URI of an unknown scheme, a malformed one, or a SQLite file that
    cannot be written (MLflow would fail deep inside a run, or create a store somewhere unexpected)."""
    from urllib.parse import urlsplit

    valid = "sqlite:///ABSOLUTE/PATH.db, http://HOST:PORT (a tracking server), postgresql://USER@HOST/DB"
    scheme = urlsplit(uri).scheme.split("+")[0]
    if "://" not in uri or scheme not in SCHEMES:
        raise ConfigError(key, f"{uri!r} is not a tracking URI labline can use", valid)
    if scheme in ("http", "https") and not urlsplit(uri).hostname:
        raise ConfigError(key, f"{uri!r} names no host", valid)
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(key, f"{uri!r} names no file", valid)
        path = Path(uri.removeprefix("sqlite:///"))
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
        if path.is_dir() or (path.exists() and not os.access(path, os.W_OK)) or not writable(folder):
            raise ConfigError(key, f"{uri!r}: {path} cannot be written", "a writable file path")
    return uri


def is_local(uri: str) -> bool:
    """A store in a file on this machine (the project's SQLite default), not a tracking server."""
    return uri.startswith(LOCAL_SCHEMES) or "://" not in uri


def exists(uri: str) -> bool:
    """Whether a local store's file is there (opening a missing one would create an empty store)."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifacts of a SQLite store live beside its file (``<folder>/mlartifacts/<experiment>``: the project's by
    default, a user's own file elsewhere keeps its artifacts with it); a tracking server decides itself (its
    proxied artifact store), so that artifacts never stay on the machine that ran a job."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts" / experiment_name).as_uri()
    return (project_root() / "mlartifacts" / experiment_name).as_uri() if is_local(uri) else None


@contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(uri.removeprefix("sqlite:///") + ".lock")):
        yield


@dataclass
class Store:
    """One MLflow store: its client, experiments created once, and the reads labline makes of it."""

    uri: str
    _client: Any = field(repr=False)
    _experiments: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` itself, for ``tracking/`` only (tests may read runs through it too)."""
        return self._client

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use with its artifact location and MLflow's model-training view."""
        if name not in self._experiments:
            with _schema_lock(self.uri):
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    self._experiments[name] = self._client.create_experiment(
                        name, artifact_location=artifact_location(self.uri, name), tags=EXPERIMENT_TAGS)
                else:
                    self._experiments[name] = experiment.experiment_id
        return self._experiments[name]

    def experiment_name(self, experiment_id: str) -> str:
        return self._client.get_experiment(experiment_id).name

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self._client.search_experiments()]

    # -- reading runs back ------------------------------------------------------------------------

    def find_run(self, run_id: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(run_id)
        except MlflowException:
            return None

    def get_run(self, run_id: str, key: str = "run_id", valid: str = "a run id from `labline runs` or `make ui`") -> Any:
        """The run, or a one-line ``ConfigError`` against ``key`` naming this store."""
        run = self.find_run(run_id)
        if run is None:
            raise ConfigError(key, f"no MLflow run '{run_id}' in {self.uri}", valid)
        return run

    def search(self, filter_string: str, experiment_ids: list[str] | None = None) -> list[Any]:
        """Every matching run, oldest first (MLflow returns pages of at most 1000); all experiments by default.
        A filter MLflow cannot parse is a ``ConfigError`` against ``filter``."""
        from mlflow.exceptions import MlflowException

        ids = self.experiment_ids() if experiment_ids is None else experiment_ids
        if not ids:
            return []
        runs: list[Any] = []
        token = None
        while True:
            try:
                page = self._client.search_runs(ids, filter_string, max_results=1000, page_token=token,
                                                order_by=["attributes.start_time ASC"])
            except MlflowException as exc:
                raise ConfigError("filter", " ".join(str(exc).split())[:300],
                                  "an MLflow filter, e.g. \"tags.dataset = 'digits'\"") from None
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def children(self, parent_id: str, experiment_ids: list[str] | None = None) -> list[Any]:
        return self.search(f"tags.`{PARENT_TAG}` = '{parent_id}'", experiment_ids)

    def finished_children(self, parent_id: str, experiment_ids: list[str] | None = None) -> dict[str, Any]:
        """Finished children by config hash (the latest wins if one config finished twice): what a resumed
        study does not train again."""
        return {r.data.tags["config_hash"]: r for r in self.children(parent_id, experiment_ids)
                if r.info.status == "FINISHED" and "config_hash" in r.data.tags}

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self._client.get_metric_history(run_id, key)

    def run_value(self, run: Any, metric: str) -> float | None:
        """A finished run's value of ``metric``: a per-epoch curve (``train/``, ``val/``) at the best epoch, whose
        checkpoint is the model that was kept and tested; any other metric, or any metric of a run without epochs
        (no ``best_epoch`` tag: a scikit-learn baseline logs its ``val/`` scores once), as logged."""
        best = run.data.tags.get("best_epoch")
        if best is not None and metric.startswith(("train/", "val/")):
            if best == "None":
                return None
            history = self.metric_history(run.info.run_id, metric)
            return next((m.value for m in history if m.step == int(best)), None)
        return run.data.metrics.get(metric)

    def list_artifacts(self, run_id: str, folder: str) -> list[str]:
        return [f.path for f in self._client.list_artifacts(run_id, folder)]

    def download(self, run_id: str, artifact: str, dest: Path) -> Path:
        """One artifact of a run, fetched into ``dest`` (raises MlflowException / OSError when it has none)."""
        dest.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(PROGRESS_BAR_ENV, "false")
        return Path(self._client.download_artifacts(run_id, artifact, str(dest)))

    def try_download(self, run_id: str, artifact: str, dest: Path) -> Path | None:
        """``download``, or None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        try:
            return self.download(run_id, artifact, dest)
        except (MlflowException, OSError):
            return None

    # -- writing (for tracking/ itself) --------------------------------------------------------------

    def log_batch(self, run_id: str, metrics: list[Any] = (), params: list[Any] = (), tags: list[Any] = ()) -> None:
        """Metrics, params and tags in writes of at most ``MLFLOW_BATCH`` items each."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        for i in range(0, max(len(metrics), len(params), len(tags), 1), MLFLOW_BATCH):
            chunk = slice(i, i + MLFLOW_BATCH)
            if metrics[chunk] or params[chunk] or tags[chunk]:
                self._client.log_batch(run_id, metrics=metrics[chunk], params=params[chunk], tags=tags[chunk])


_STORES: dict[str, Store] = {}


def open_store(configured_uri: str | None = None) -> Store:
    """The store of the current tracking URI (one client per URI and process)."""
    uri = tracking_uri(configured_uri)
    if uri not in _STORES:
        from mlflow.tracking import MlflowClient

        with _schema_lock(uri):
            _STORES[uri] = Store(uri, MlflowClient(tracking_uri=uri))
    return _STORES[uri]


def ensure_experiment(experiment_name: str, configured_uri: str | None = None) -> tuple[str, str]:
    """Create the store and the experiment once; returns ``(tracking_uri, experiment_id)``."""
    store = open_store(configured_uri)
    return store.uri, store.experiment_id(experiment_name)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Destination:
    """The ``logger`` config: which experiment of which store a run goes to, and whether it keeps its checkpoint."""

    experiment_name: str = "labline"
    tracking_uri: str | None = None
    log_checkpoint: bool = True

    def __post_init__(self) -> None:
        tracking_uri(self.tracking_uri)  # a bad URI is refused where the config is built, before anything trains

    @property
    def store(self) -> Store:
        return open_store(self.tracking_uri)
