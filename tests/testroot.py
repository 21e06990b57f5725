"""Where the tests read the project from: the checkout (``CHECKOUT``), its conf/ (``CONF``) and a clean project
root (``ROOT``). A module of its own, not conftest.py: tests/ and tests/e2e/ both have a conftest, and in one
pytest process ``from conftest import ...`` may resolve to either."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
CONF = CHECKOUT / "conf"
# What in-process tests read beside conf/ (docs, pipelines, params.yaml, the sources for the docs tests).
LINKED = ("conf", "docs", "pipelines", "src", "params.yaml", "dvc.yaml", "README.md", "pyproject.toml")


def _clean_root() -> Path:
    """The project root in-process tests train against: the checkout's files, linked, without its DVC outputs
    (data/, models/, dvc.lock) or stores, so a developer's `make run` (or a stale data/processed) never changes
    what a test reads; data are prepared in memory."""
    root = Path(tempfile.mkdtemp(prefix="labline-tests-root-"))
    for name in LINKED:
        (root / name).symlink_to(CHECKOUT / name)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


ROOT = _clean_root()
