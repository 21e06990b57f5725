"""Where the project lives, even when DVC runs a stage in a throwaway copy.

``dvc exp run --temp`` and queued experiments execute in
``<project>/.dvc/tmp/exps/...``: every relative path there lands in a copy that
is deleted afterwards. Results that must outlive the stage (the MLflow store)
are therefore anchored at the real project root computed here.
"""

from __future__ import annotations

import os
from pathlib import Path

_DVC_TEMP_MARKER = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def workspace_root(start: Path | None = None) -> Path:
    """The project folder at or above ``start``: the one holding ``conf/train.yaml``.

    Pipelines under ``pipelines/<name>/`` have their own ``dvc.yaml`` but share the
    project's ``conf/``, data and store, so ``conf/`` decides; ``dvc.yaml`` alone is
    the fallback for a project without a conf/ folder.
    """
    here = (start or Path.cwd()).resolve()
    for marker in (Path("conf") / "train.yaml", Path("dvc.yaml")):
        for candidate in (here, *here.parents):
            if (candidate / marker).exists():
                return candidate
    return here


def project_root(start: Path | None = None) -> Path:
    """The real project: the workspace, or the repo that owns a DVC temp workspace."""
    env = os.environ.get("LABLINE_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    ws = str(workspace_root(start))
    if _DVC_TEMP_MARKER in ws + os.sep:
        return Path((ws + os.sep).split(_DVC_TEMP_MARKER)[0])
    return Path(ws)


def config_dir() -> Path:
    """The ``conf/`` folder the CLI composes from (the workspace's own)."""
    env = os.environ.get("LABLINE_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    return workspace_root() / "conf"
