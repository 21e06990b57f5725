"""Finding an interrupted run to resume: the same config, a live checkpoint, no live owner.

While a run trains, ``.labline/inflight/<config_hash>.json`` names its output
folder, MLflow run and process. A clean finish (or a crash, which is FAILED
for good) removes it; SIGKILL, SIGINT and SIGTERM leave it, so running the same
command again resumes from the newest epoch-end checkpoint (``checkpoints/last.ckpt``, or
``model.ckpt`` when the best epoch was the last one: see ``callbacks.checkpoints``) into the same MLflow run.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from labline.callbacks.checkpoints import BEST, LAST, checkpoint_file
from labline.core.paths import project_root
from labline.tracking.lifecycle import close_run
from labline.tracking.store import Store

__all__ = ["BEST", "LAST", "Resume", "checkpoint_file", "clear", "close_orphan", "find", "latest_checkpoint", "mark", "pointer"]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newer of the resumable and the best checkpoint: an epoch that improved is only in the best one."""
    found = [p for p in (checkpoint_file(out_dir, name) for name in (LAST, BEST)) if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


@dataclass(frozen=True)
class Resume:
    out_dir: Path
    run_id: str
    checkpoint: Path


def pointer(root: Path, config_hash: str) -> Path:
    """Kept beside the MLflow store the run lives in (the project root, also from a DVC temp workspace,
    which is deleted after the stage), so whoever shares a store shares what there is to resume."""
    return project_root(root) / ".labline" / "inflight" / f"{config_hash}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find(root: Path, config_hash: str) -> tuple[Resume | None, str | None]:
    """``(resume, orphan_run_id)``: what to resume, or an MLflow run that died before its first checkpoint."""
    path = pointer(root, config_hash)
    if not path.exists():
        return None, None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        path.unlink()
        return None, None
    if record.get("host") == socket.gethostname() and record.get("pid") != os.getpid() and _alive(record.get("pid", -1)):
        return None, None  # the same config is training right now in another process: start a separate run
    checkpoint = latest_checkpoint(Path(record["out_dir"]))
    if checkpoint is None:
        path.unlink()
        return None, record.get("run_id")
    return Resume(Path(record["out_dir"]), record["run_id"], checkpoint), None


def mark(root: Path, config_hash: str, out_dir: Path, run_id: str) -> Path:
    path = pointer(root, config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"out_dir": str(out_dir.resolve()), "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def clear(root: Path, config_hash: str) -> None:
    pointer(root, config_hash).unlink(missing_ok=True)


def close_orphan(store: Store, run_id: str) -> None:
    """A run whose process died before its first checkpoint: record it as KILLED, not RUNNING for ever."""
    run = store.find_run(run_id)
    if run is not None and run.info.status == "RUNNING":
        close_run(store, run_id, "KILLED")
