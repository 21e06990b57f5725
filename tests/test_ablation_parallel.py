"""An ablation trained by two worker processes: runs nest under the parent and match the in-process results."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from labline.studies.ablation.runner import run_ablation
from labline.studies.ablation.spec import load
from labline.tracking.store import tracking_uri


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two cores")
def test_two_workers_give_the_same_table_as_one_process(tmp_path) -> None:
    words = ["ablation=tiny", "seeds=1", "components=[dropout]"]
    parallel = run_ablation(load([*words, "name=tiny_parallel", "workers=2"])[0], tmp_path)
    serial = run_ablation(load([*words, "name=tiny_serial"])[0], tmp_path)
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("digits").experiment_id
    (parent,) = client.search_runs([experiment], "tags.ablation = 'tiny_parallel' and tags.role = 'ablation'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["ablation_variant"] for c in children) == ["full", "no_dropout"]
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    assert [(r.variant, r.value) for r in parallel.runs] == [(r.variant, r.value) for r in serial.runs]
    assert (tmp_path / "reports" / "ablation" / "tiny_parallel" / "table.md").exists()
