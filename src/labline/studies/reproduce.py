"""``labline reproduce RUN_ID``: re-run a recorded run and compare its metrics.

A run records its resolved config, git commit, data hash, seed and package
versions. Reproducing refuses to run on a different code commit, a dirty
tree or different data unless ``--allow-drift`` is given, in which case the
drift is written on the new run: a number is only comparable when what
produced it is known.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from labline.core.errors import ConfigError
from labline.runs.context import RunContext
from labline.tracking import provenance
from labline.tracking.store import open_store

COMPARED = ("test/acc", "test/f1_macro", "test/loss")


def drift(run: Any, root: Path, data_md5: str) -> list[str]:
    """What differs between the recorded run and the code and data here now."""
    tags = run.data.tags
    now = provenance.git_state(root)
    found = []
    if tags.get("git_commit") != now["git_commit"]:
        found.append(f"code commit {tags.get('git_commit', '?')[:10]} -> {now['git_commit'][:10]}")
    if now["git_dirty"] == "true":
        found.append("working tree has uncommitted changes")
    if tags.get("data_md5") != data_md5:
        found.append(f"data md5 {tags.get('data_md5', '?')[:10]} -> {data_md5[:10]}")
    return found


def reproduce(run_id: str, root: Path, allow_drift: bool = False, outputs: Path | None = None) -> dict[str, Any]:
    """Re-run a recorded run's config into ``outputs`` (default: the project's ``outputs/``) and compare metrics."""
    from labline.data.pipeline import load_processed
    from labline.reporting.console import console
    from labline.runs.dispatch import run_task

    store = open_store()
    run = store.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = store.try_download(run_id, "config.yaml", Path(tmp))
        if path is None:
            raise ConfigError("run_id", f"run '{run_id}' has no config.yaml artifact", "a run made by labline")
        cfg = OmegaConf.load(path)
    cfg.resume = False
    differences = drift(run, root, load_processed(cfg, root).md5)
    if differences and not allow_drift:
        raise ConfigError("reproduce", "; ".join(differences), "check out the recorded commit/data, or pass --allow-drift")
    # another CPU is not drift a user can undo (it refuses nothing), but it explains digits that differ
    here = provenance.machine()
    machine = [f"{key} {run.data.tags[f'machine.{key}']} -> {value}" for key, value in here.items()
               if run.data.tags.get(f"machine.{key}", value) != value]
    out_dir = (outputs or root / "outputs") / f"reproduce-{run_id[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {"reproduced_from": run_id, "drift": "; ".join(differences) or "none", "machine_drift": "; ".join(machine) or "none"}
    result = run_task(cfg, out_dir, root, context=RunContext(tags, kind="reproduce"))
    rows = [(k, run.data.metrics.get(k), result.get(k)) for k in COMPARED if k in run.data.metrics]
    from rich.table import Table

    table = Table(title=f"reproduce {run_id}")
    for column in ("metric", "recorded", "reproduced", "equal"):
        table.add_column(column)
    for key, old, new in rows:
        table.add_row(key, f"{old:.6f}", f"{new:.6f}", "yes" if old == new else "NO")
    console.print(table)
    if machine:
        console.print(f"recorded on another machine ({'; '.join(machine)}): its float kernels round differently, so "
                      "the last digits (and a few test samples) may differ")
    return {"run_id": result["run_id"], "identical": all(old == new for _, old, new in rows), "drift": differences,
            "machine_drift": machine}
