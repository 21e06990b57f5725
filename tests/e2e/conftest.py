"""e2e fixtures: each test module gets its own fresh copy of the project."""

from __future__ import annotations

from pathlib import Path

import pytest
from project_copy import copy_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))
