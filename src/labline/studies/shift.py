"""``labline evaluate RUN_ID shift=NAME``: a finished run scored on shifted test sets, without retraining.

The run is found in the current store (the tracking URI rules of ``labline.tracking``), its recorded
``config.yaml`` and its ``checkpoints/*.ckpt`` are fetched as ``reproduce`` and ``backbone.weights`` fetch
them (``labline.runs.checkpoints``), the model is rebuilt from the config and given the checkpoint's weights
(``weights_only``), and its data are rebuilt as the run recorded them: the same source, split and
preprocessing, checked against the run's ``data_md5`` and ``split_hash`` tags. Then each family of
``conf/shift/`` named on the command line (``shift=corruptions``, ``shift=[corruptions,label]``, with
``shift.<family>.<key>=value`` overrides) is scored (``labline.runs.shift``).

Everything is computed before any MLflow run is opened, so a refused input (unknown run, unknown family, a
scikit-learn or segmentation run, data that no longer match) is one line and no run. The results go to a
new run nested under the evaluated one (``mlflow.parentRunId``), named ``shift-<run name>`` and tagged
``shift_of=<run id>``: the training run's metrics and artifacts stay exactly as training left them, and
evaluating again with other settings adds a run instead of overwriting numbers. A training run whose config
has a ``shift`` node reports the same metrics on itself instead (what ablations and sweeps read).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labline.core.config import compose_config, to_plain
from labline.core.errors import ConfigError
from labline.core.io import write_json
from labline.reporting.console import console
from labline.runs.checkpoints import CHECKPOINT_ARTIFACTS, resolve_checkpoint
from labline.runs.records import split_hash
from labline.runs.shift import FOLDER, SHIFT_KEY, check_shiftable, check_task, evaluate_shifts, families, load_weights
from labline.tracking.lifecycle import open_run
from labline.tracking.store import exists, open_store, tracking_uri

SHIFT_OF_TAG = "shift_of"
VALID_WORDS = "shift=corruptions, shift=[corruptions,label,cross_dataset], shift.corruptions.seed=1"
RUN_VALID = "the id of a finished labline training run (`labline runs`)"


def shift_node(words: Sequence[str]) -> DictConfig:
    """The ``shift`` node composed from ``conf/shift/`` and the command's words (nothing else may be set)."""
    others = [w for w in words if not w.lstrip("+~").startswith(SHIFT_KEY)]
    if others:
        raise ConfigError(others[0], "labline evaluate takes shift=... words only (the run's own config is used)", VALID_WORDS)
    node = compose_config(list(words)).get(SHIFT_KEY)
    if not node:
        raise ConfigError(SHIFT_KEY, "names no shift family", VALID_WORDS)
    return node


def _finished_run(run_id: str) -> Any:
    if not exists(tracking_uri()):
        raise ConfigError("run_id", f"no MLflow store at {tracking_uri()} to find run '{run_id}' in", RUN_VALID)
    run = open_store().get_run(run_id, valid=RUN_VALID)
    if run.info.status != "FINISHED":
        raise ConfigError("run_id", f"run '{run_id}' is {run.info.status}, not FINISHED", RUN_VALID)
    return run


def _recorded_config(run_id: str) -> DictConfig:
    with tempfile.TemporaryDirectory() as tmp:
        path = open_store().try_download(run_id, "config.yaml", Path(tmp))
        if path is None:
            raise ConfigError("run_id", f"run '{run_id}' has no config.yaml artifact", RUN_VALID)
        return OmegaConf.load(path)


def _check_data(run: Any, recorded: dict[str, str]) -> None:
    for tag, now in recorded.items():
        then = run.data.tags.get(tag)
        if then is not None and then != now:
            raise ConfigError(
                "data",
                f"the run's test split cannot be rebuilt here: {tag} {then[:10]} -> {now[:10]}",
                "the data the run was trained on (`dvc checkout`, or the recorded data.source)",
            )


def evaluate_run(run_id: str, words: Sequence[str], root: Path, output: Path | None = None) -> dict[str, Any]:
    """Score finished run ``run_id`` on the families ``words`` name; returns the new run's id and metrics."""
    from labline.data.semi import load_training_data
    from labline.models.task import build_task
    from labline.runs.assembly import build_datamodule, task_context
    from labline.runs.runtime import setup_runtime

    node = shift_node(words)
    run = _finished_run(run_id)
    cfg = _recorded_config(run_id)
    check_shiftable(cfg)
    shifts = families(node)
    checkpoint = resolve_checkpoint(run_id, "run_id", f"a run that logged its model ({CHECKPOINT_ARTIFACTS}/*.ckpt)")
    setup_runtime(cfg)
    data = load_training_data(cfg, root)
    datamodule = build_datamodule(cfg, data)
    _check_data(run, {"data_md5": data.md5, "split_hash": split_hash(data, datamodule)})
    task = check_task(build_task(task_context(cfg, datamodule)), cfg)
    load_weights(task, checkpoint.path)
    store = open_store()
    experiment = store.experiment_name(run.info.experiment_id)
    out_dir = root / "outputs" / f"shift-{run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        report = evaluate_shifts(task, cfg, root, shifts, "test", out_dir)
    except ConfigError:  # a family that does not fit the run's data (cross_dataset on other classes): nothing kept
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    write_json(report.metrics, output or out_dir / "metrics.json")
    name = f"shift-{run.info.run_name or run_id[:8]}"
    tags = {SHIFT_OF_TAG: run_id, "dataset": str(cfg.data.name), "shift": ",".join(shifts)}
    with open_run(
        store, experiment, name, tags=tags, config={"evaluated_run": run_id, SHIFT_KEY: to_plain(node)}, root=root, parent=run_id
    ) as handle:
        handle.log_metrics(report.metrics)
        for path in report.files:
            handle.log_artifact(path, FOLDER)
    _print_summary(report.summary)
    console.print(f"tables and heat-maps: {out_dir / FOLDER}")
    return {"run_id": handle.run_id, "out_dir": str(out_dir), **report.metrics}


def _print_summary(summary: dict[str, float]) -> None:
    """The clean accuracy and each family's summary (every per-set value is in the run and its tables)."""
    from rich.table import Table

    table = Table(title="accuracy under distribution shift (test split)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)
