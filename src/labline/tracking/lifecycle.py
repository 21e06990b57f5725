"""The one run lifecycle: every MLflow run labline makes is opened and closed by ``open_run``.

A training, the parent of a cross-validation or an ablation, a study's parent and a trial's child all go
through it, so each one

- is created with its tags in one write (a process killed right after creation leaves a RUNNING run that
  its study can still identify and close);
- records, when it is new and given its config, what it needs to be repeated: the flattened config as
  params, the resolved config as ``config.yaml``, the git state and package versions;
- carries a description (``mlflow.note.content``, shown on the run page): the command that made it;
- nests the same way: its parent is the one named (``parent=``, or the ``mlflow.parentRunId`` tag), else the
  innermost run this process has open, else ``LABLINE_PARENT_RUN_ID`` (worker processes of a parallel sweep
  or ablation; never ``MLFLOW_RUN_ID``, which would make a child write into its parent);
- ends FINISHED, FAILED with a ``failure_reason`` tag on any exception, or KILLED with a ``stop_reason`` tag
  on Ctrl-C or SIGTERM.

Runs are written with the client API against an explicit ``Store``, never through MLflow's global "active
run": nesting then works the same in this process and in worker processes, a resumed training can re-open
its own run under an open parent, and nothing sets the process's tracking URI behind the user's back.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labline.core.config import flatten
from labline.core.interrupts import Interrupted
from labline.tracking import provenance
from labline.tracking.store import PARENT_TAG, Store, now_ms

PARENT_ENV = "LABLINE_PARENT_RUN_ID"
__all__ = ["PARENT_ENV", "PARENT_TAG", "RunHandle", "close_run", "current_run", "open_run", "tag_run"]
MAX_PARAM_CHARS = 250
MAX_REASON_CHARS = 5000
STATUSES = ("FINISHED", "FAILED", "KILLED")
DESCRIPTION_TAG = "mlflow.note.content"

_open: ContextVar[tuple[RunHandle, ...]] = ContextVar("labline_open_runs", default=())


def current_run() -> RunHandle | None:
    """The innermost run this process has open (a sweep trial's training, say), or None."""
    runs = _open.get()
    return runs[-1] if runs else None


@dataclass
class RunHandle:
    """An open run: what may be written to it and read back from it while it is open."""

    store: Store
    run_id: str
    experiment_id: str
    _final: tuple[str, dict[str, str]] | None = field(default=None, repr=False)

    # -- writing ---------------------------------------------------------------------------------

    def log_params(self, params: dict[str, Any]) -> None:
        """MLflow keeps at most 250 characters of a param: the whole config is the ``config.yaml`` artifact."""
        from mlflow.entities import Param

        self.store.log_batch(self.run_id, params=[Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        self.store.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def log_epochs(self, rows: list[dict[str, float]]) -> None:
        """Several epochs' metrics (each row has an ``epoch``, the x-axis) in one write."""
        from mlflow.entities import Metric

        now = now_ms()
        self.store.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(row["epoch"]))
                                                   for row in rows for k, v in row.items() if k != "epoch"])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.store.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.store.client.log_artifact(self.run_id, str(path), folder)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.store.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.store.client.log_text(self.run_id, text, name)

    def log_dict(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True), name)

    def end_as(self, status: str, **tags: str) -> None:
        """Close with ``status`` (and ``tags``) instead of FINISHED when the block ends without an exception."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self._final = (status, tags)

    def keep_open(self) -> None:
        """Leave the run RUNNING when the block ends: a study whose workers go on as cluster jobs after the launching
        command returned (the next command re-opens and closes it)."""
        self._final = ("RUNNING", {})

    # -- reading back ----------------------------------------------------------------------------

    def logged_steps(self, key: str) -> set[int]:
        return {m.step for m in self.store.metric_history(self.run_id, key)}

    def get(self) -> Any:
        return self.store.get_run(self.run_id)

    def children(self) -> list[Any]:
        return self.store.children(self.run_id, [self.experiment_id])

    def finished_children(self) -> dict[str, Any]:
        return self.store.finished_children(self.run_id, [self.experiment_id])

    def close_stale_children(self) -> None:
        """Children still RUNNING once the study is done belong to a process that died (a sibling with the
        same config finished since): record them as KILLED so no run stays RUNNING for ever."""
        done = self.finished_children()
        for run in self.children():
            if run.info.status == "RUNNING" and run.data.tags.get("config_hash") in done:
                close_run(self.store, run.info.run_id, "KILLED")


def _parent(tags: dict[str, str], parent: str | None) -> str | None:
    if parent:
        return parent
    if tags.get(PARENT_TAG):
        return tags[PARENT_TAG]
    inner = current_run()
    return inner.run_id if inner is not None else os.environ.get(PARENT_ENV) or None


def _record_start(run: RunHandle, config: dict[str, Any], root: Path) -> None:
    run.log_params(flatten(config))
    versions = {f"version.{k}": v for k, v in provenance.package_versions().items()}
    run.set_tags({**provenance.git_state(root), **versions,
                  **{f"machine.{k}": v for k, v in provenance.machine().items()}})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        run.log_artifact(path)


def command_line() -> str:
    """The command this process runs, as the user would type it (``labline train`` sets its own argv[0])."""
    program, *args = sys.argv or ["python"]
    program = program if " " in program else Path(program).name
    return " ".join([program, shlex.join(args)]).strip()


def _create(store: Store, experiment_id: str, name: str, tags: dict[str, str], parent: str | None) -> str:
    """A new RUNNING run with every tag in one write, including the source/user tags MLflow's own
    ``start_run`` would add."""
    from mlflow.tracking.context.registry import resolve_tags

    described = {DESCRIPTION_TAG: f"Made by: `{command_line()}`", **tags}
    every = resolve_tags({**described, **({PARENT_TAG: parent} if parent else {})})
    return store.client.create_run(experiment_id, start_time=now_ms(), tags=every, run_name=name or None).info.run_id


@contextmanager
def open_run(store: Store, experiment: str, name: str, *, tags: dict[str, Any] | None = None,
             config: dict[str, Any] | None = None, root: Path | None = None, parent: str | None = None,
             run_id: str | None = None) -> Iterator[RunHandle]:
    """Open a new run (or re-open ``run_id``) for the block; see the module docstring for what it guarantees.

    ``config`` and ``root`` (the project, for its git state) are recorded on a new run only: a re-opened run
    already holds them.
    """
    plain_tags = {k: str(v) for k, v in (tags or {}).items()}
    experiment_id = store.experiment_id(experiment)
    if run_id is None:
        run_id = _create(store, experiment_id, name, plain_tags, _parent(plain_tags, parent))
        handle = RunHandle(store, run_id, experiment_id)
        if config is not None:
            _record_start(handle, config, root or Path.cwd())
    else:
        store.client.update_run(run_id, status="RUNNING")
        handle = RunHandle(store, run_id, store.get_run(run_id).info.experiment_id)
        if plain_tags:
            handle.set_tags(plain_tags)
    token = _open.set((*_open.get(), handle))
    try:
        yield handle
    except (KeyboardInterrupt, Interrupted) as exc:
        close_run(store, run_id, "KILLED", stop_reason=str(exc) or "KeyboardInterrupt")
        raise
    except BaseException as exc:
        close_run(store, run_id, "FAILED", failure_reason=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _open.reset(token)
    status, final_tags = handle._final or ("FINISHED", {})
    if status != "RUNNING":
        close_run(store, run_id, status, **final_tags)


def tag_run(store: Store, run_id: str, tags: dict[str, Any]) -> None:
    """Tags on a run that is no longer open (a study recording a finished trial's outcome)."""
    from mlflow.entities import RunTag

    if tags:
        store.log_batch(run_id, tags=[RunTag(k, str(v)[:MAX_REASON_CHARS]) for k, v in tags.items()])


def close_run(store: Store, run_id: str, status: str, **tags: str) -> None:
    """End a run with ``status`` and reason tags: the close of ``open_run``, and of runs a dead process left
    RUNNING (found by a study through its tags or its resume record)."""
    tag_run(store, run_id, tags)
    store.client.set_terminated(run_id, status=status, end_time=now_ms())
