"""Whether a lab service can run here, for the cluster tests: the one place such a test may be skipped.

A skip names the command that enables the service. Under ``CI=true`` a skip would hide an untested
feature, so it fails instead (CI runs as root and ``make test`` installs the services first).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
from project_copy import BIN, project_env, unavailable

from labline.lab.stack import available

ENABLE = "sudo make lab-install (installs postgresql, slurm-wlm and munge from Debian), then run the tests as root"


def require(service: str) -> None:
    if available()[service]:
        return
    unavailable(f"{service} cannot run on this machine (not installed, or not root): {ENABLE}")


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def load_study(name: str, url: str) -> optuna.Study:
    """The study through one storage per URL, for tests that poll it: a fresh ``load_study(storage=url)`` per poll
    opens a connection pool each time and, before the garbage collector disposes them, exhausts PostgreSQL's
    max_connections ("sorry, too many clients already", seen in CI)."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=name, storage=_STORAGES[url])


def lab_env(project: Path, **extra: str) -> dict[str, str]:
    """A user's environment in the project copy plus the lab variables they exported."""
    return {**project_env(project), **extra}


def run(project: Path, env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    program = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    return subprocess.run([program, *args[1:]], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}: {result.stdout[-4000:]}{result.stderr[-4000:]}"
    return result

