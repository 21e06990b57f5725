"""The lab stack for the cluster tests: real PostgreSQL, MLflow server, SLURM and SeaweedFS on 127.0.0.1.

One stack per pytest-xdist worker (its ports shifted by the worker's index), started by ``labline.lab`` (the
code behind ``labline lab up``) as each service is first asked for, and stopped by process group at the end
of the session, also when a test fails. A service this machine cannot run (not installed, not root) skips
its tests with the command that enables it; under ``CI=true`` that is a failure (``services.require``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from project_copy import ROOT, copy_project  # noqa: E402
from services import require  # noqa: E402

from labline.lab.stack import Lab, Ports  # noqa: E402

CONF = ROOT / "conf"
__all__ = ["CONF", "ROOT"]


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


@pytest.fixture(scope="session")
def lab_stack(tmp_path_factory) -> Iterator[Lab]:
    """Nothing started yet; the fixtures below start what their tests need. Everything stops at the end."""
    lab = Lab(tmp_path_factory.mktemp("lab"), Ports().shifted(3000 + 100 * _worker_index()))
    try:
        yield lab
    finally:
        lab.stop()


def _started(lab: Lab, service: str) -> Lab:
    require(service)
    lab.start((service,))
    return lab


@pytest.fixture(scope="session")
def postgres_lab(lab_stack: Lab) -> Lab:
    return _started(lab_stack, "postgres")


@pytest.fixture(scope="session")
def server_lab(lab_stack: Lab) -> Lab:
    """PostgreSQL and an MLflow server on it with a proxied artifact store."""
    return _started(lab_stack, "mlflow")


@pytest.fixture(scope="session")
def slurm_lab(lab_stack: Lab) -> Lab:
    return _started(lab_stack, "slurm")


@pytest.fixture(scope="session")
def s3_lab(lab_stack: Lab) -> Lab:
    return _started(lab_stack, "s3")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))
