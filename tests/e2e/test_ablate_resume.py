"""An ablation killed with SIGKILL midway, then run again: it completes without re-running finished runs."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from project_copy import BIN, project_env, run_cli

pytestmark = pytest.mark.e2e


def _finished_children(db: Path) -> dict[str, str]:
    """config_hash -> run id of the ablation's FINISHED children, read straight from the store the study writes."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute("select r.run_uuid, h.value from runs r join tags v on v.run_uuid = r.run_uuid "
                            "join tags h on h.run_uuid = r.run_uuid where v.key = 'ablation_variant' "
                            "and h.key = 'config_hash' and r.status = 'FINISHED'").fetchall()
    return {h: run for run, h in rows}


def test_killed_study_resumes_and_trains_only_what_did_not_finish(project: Path, tmp_path: Path) -> None:
    db = project / "mlflow.db"
    log = open(tmp_path / "first.log", "w")
    env = {**project_env(project), "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([str(BIN / "labline"), "ablate", "ablation=tiny"], cwd=project, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    # touch the store only once the study has created it: a reader during schema creation could break it
    while "runs planned" not in (tmp_path / "first.log").read_text() or len(_finished_children(db)) < 2:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the first runs never finished"
        time.sleep(0.2)
    first.kill()  # SIGKILL: no clean-up at all, the parent and the run in flight stay RUNNING
    first.wait()
    before = _finished_children(db)
    assert 2 <= len(before) < 6, "killed midway"

    result = run_cli(project, "labline", "ablate", "ablation=tiny", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"6 runs planned, {len(before)} already finished, {6 - len(before)} to run" in result.stdout

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "")
    (parent,) = [r for r in runs if r.data.tags.get("role") == "ablation"]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = Counter(r.data.tags["config_hash"] for r in children if r.info.status == "FINISHED")
    assert len(finished) == 6 and set(finished.values()) == {1}, "each planned config finished exactly once"
    after = _finished_children(db)
    assert all(after[h] == run_id for h, run_id in before.items()), "runs finished before the kill were not re-run"
    assert not [r for r in runs if r.info.status == "RUNNING"], "nothing is left RUNNING"
    with open(project / "reports" / "ablation" / "tiny" / "table.csv") as fh:
        assert [row["n"] for row in csv.DictReader(fh)] == ["2", "2", "2"]
