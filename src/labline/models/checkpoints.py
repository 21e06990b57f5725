"""Checkpoints a model starts from (``backbone.weights``, a distillation teacher), as the models layer sees them.

A user names a checkpoint by a file or by the MLflow run that logged it. Models never talk to MLflow: a task
asks its context's resolver, which the runs layer backs with the tracking store; here, outside a run (a
notebook, a test), only files resolve.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labline.core.errors import ConfigError
from labline.core.paths import workspace_root


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint file on this machine, what the user wrote to name it, and the run that wrote it if known."""

    path: Path
    source: str
    run_id: str | None = None


# (source, config key, what would be valid) -> a local checkpoint, or a ConfigError against the key.
CheckpointResolver = Callable[[str, str, str], CheckpointRef]


def checkpoint_path(source: str) -> Path:
    """A file source as a path: a relative one that is not a file here is read from the project root, like
    ``paths.*``, so a pipeline stage running in its own folder finds the same file."""
    path = Path(source).expanduser()
    return path if path.is_absolute() or path.is_file() else workspace_root() / path


def recorded_run_id(checkpoint: Path) -> str | None:
    """The MLflow run that wrote ``checkpoint``, from the ``run.json`` labline writes next to ``checkpoints/``."""
    record = checkpoint.parent.parent / "run.json"
    if not record.is_file():
        return None
    recorded = json.loads(record.read_text())
    if (record.parent / str(recorded.get("checkpoint", ""))).resolve() != checkpoint.resolve():
        return None
    return recorded.get("run_id")


def local_checkpoint(source: str, key: str, valid: str) -> CheckpointRef:
    """Files only: the resolver of a context built outside a tracked run."""
    if not isinstance(source, str) or not source:
        raise ConfigError(key, f"must be a checkpoint path or a run id, got {source!r}", valid)
    path = checkpoint_path(source)
    if not path.is_file():
        raise ConfigError(key, f"no checkpoint file '{path}'", valid)
    return CheckpointRef(path, source, recorded_run_id(path))
