"""e2e fixtures: each test module gets its own fresh copy of the project."""

from __future__ import annotations

from pathlib import Path

import pytest
from project_copy import ROOT, copy_project

# Test modules import ``ROOT``/``CONF`` with ``from conftest import ...``; in one pytest process the
# name ``conftest`` may resolve to this file instead of tests/conftest.py, so it offers the same names.
CONF = ROOT / "conf"
__all__ = ["CONF", "ROOT", "project"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))
