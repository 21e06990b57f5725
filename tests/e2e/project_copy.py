"""Helpers for e2e tests: a temporary copy of the project (tracked + untracked-not-ignored files), as a fresh clone would have."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        # reports/ holds the committed results of the real project; a copy starts without them, but with
        # dvc.lock, as a fresh clone does (its data/ and models/ are DVC outputs, not in git).
        if src.is_file() and not rel.startswith(("data/", "models/", "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=labline-tests", "-c", "user.email=tests@labline.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "fresh copy"], cwd=dest, check=True)
    return dest


def project_env(project: Path) -> dict[str, str]:
    """The environment a user has in the copy: venv on PATH, no test overrides of the store."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LABLINE_PROJECT_ROOT", "LABLINE_CONFIG_DIR") and not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "labline-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@labline.invalid"
    env["MPLBACKEND"] = "Agg"
    return env


def run_cli(project: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=project, env=project_env(project), capture_output=True,
                          text=True, timeout=timeout)


def unavailable(message: str) -> None:
    """Skip a test whose system service (Chromium, PostgreSQL, SLURM) cannot be installed here, naming how to
    enable it; under ``CI=true`` the skip would hide an untested feature, so it fails instead."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: this test may not skip. {message}")
    pytest.skip(message)
