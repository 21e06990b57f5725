"""Checkpoints named in a config, fetched for the models layer: a file, or the MLflow run that logged one.

Tasks ask their context for ``backbone.weights`` and distillation teachers; inside a run the context's
resolver is ``resolve_checkpoint``, which takes a file as the models layer does and otherwise an MLflow run
id, whose single ``checkpoints/*.ckpt`` artifact is downloaded from the current store into a cache folder
beside the store (a run's artifacts never change, so each is fetched once per machine).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from labline.core.errors import ConfigError
from labline.core.paths import project_root
from labline.models.checkpoints import CheckpointRef, checkpoint_path, local_checkpoint
from labline.tracking.store import exists, open_store, tracking_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")
CHECKPOINT_ARTIFACTS = "checkpoints"


def resolve_checkpoint(source: str, key: str, valid: str) -> CheckpointRef:
    if isinstance(source, str) and RUN_ID.fullmatch(source) and not checkpoint_path(source).is_file():
        return CheckpointRef(_download(source, key, valid), source, source)
    return local_checkpoint(source, key, valid)


def _download(run_id: str, key: str, valid: str) -> Path:
    """The single ``.ckpt`` in the run's ``checkpoints/`` artifacts (what ``labline train`` logs)."""
    if not exists(tracking_uri()):
        raise ConfigError(key, f"no MLflow store at {tracking_uri()} to find run '{run_id}' in", valid)
    store = open_store()
    if store.find_run(run_id) is None:
        raise ConfigError(key, f"unknown MLflow run id '{run_id}' in {store.uri}", valid)
    found = [p for p in store.list_artifacts(run_id, CHECKPOINT_ARTIFACTS) if p.endswith(".ckpt")]
    if len(found) != 1:
        raise ConfigError(key, f"run '{run_id}' has {len(found)} {CHECKPOINT_ARTIFACTS}/*.ckpt artifacts, expected one",
                          "the path of the checkpoint file to use")
    cached = project_root() / ".labline" / "checkpoints" / run_id / found[0]
    if not cached.is_file():  # fetched beside the cache, then renamed: a killed download never looks complete
        with tempfile.TemporaryDirectory(dir=_ensure(cached.parent.parent)) as tmp:
            downloaded = store.download(run_id, found[0], Path(tmp))
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.replace(downloaded, cached)
    return cached


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
