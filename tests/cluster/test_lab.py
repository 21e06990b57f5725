"""`labline lab up` / `lab down`: the stack starts on 127.0.0.1, prints what to export, and stops completely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from services import require

from labline.lab.process import alive, http_ok, port_open
from labline.lab.stack import Ports

pytestmark = pytest.mark.e2e


def _labline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labline.cli", "lab", *args], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})


def test_lab_up_prints_the_exports_and_down_stops_every_process(tmp_path: Path) -> None:
    require("mlflow")
    require("slurm")
    offset = 3050 + 100 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    ports = Ports().shifted(offset)
    up = _labline("up", "mlflow", "slurm", "s3", "--dir", str(tmp_path), "--port-offset", str(offset))
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "lab.json").read_text())
        pids = [pid for group in state["pids"].values() for pid in group.values()]
        assert set(state["pids"]) == {"postgres", "mlflow", "slurm", "s3"}
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{ports.mlflow}" in up.stdout
        assert f"export SLURM_CONF={tmp_path / 'slurm' / 'slurm.conf'}" in up.stdout
        assert "LABLINE_LAB_OPTUNA_STORAGE=postgresql+psycopg://postgres@127.0.0.1" in up.stdout
        assert http_ok(f"http://127.0.0.1:{ports.mlflow}/health")
        assert port_open(ports.postgres) and port_open(ports.slurmctld)
        again = _labline("up", "--dir", str(tmp_path))
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, "a second up is one line, exit 2"
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                               env={**os.environ, "SLURM_CONF": str(tmp_path / "slurm" / "slurm.conf")})
        assert sinfo.stdout.split()[:2] == ["debug*", "idle"]
    finally:
        down = _labline("down", "--dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert pids and not [pid for pid in pids if alive(pid)], "every server is stopped"
    assert not port_open(ports.mlflow) and not port_open(ports.postgres)
