"""An ablation on SLURM (every variant x seed one array task) gives the same table as in-process."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from services import lab_env, ok, run

pytestmark = pytest.mark.e2e


def _table(project: Path, name: str) -> list[dict[str, str]]:
    with open(project / "reports" / "ablation" / name / "table.csv") as fh:
        return list(csv.DictReader(fh))


def test_an_ablation_on_slurm_matches_the_in_process_table(project: Path, slurm_lab) -> None:
    env = lab_env(project, SLURM_CONF=str(slurm_lab.slurm_conf))
    here = ok(run(project, env, "labline", "ablate", "ablation=tiny", "seeds=1", "logger.experiment_name=here"))
    local = _table(project, "tiny")
    there = ok(run(project, env, "labline", "ablate", "ablation=tiny", "seeds=1", "logger.experiment_name=there",
                   "backend=slurm", "slurm.cpus_per_task=1", "slurm.time_min=10"))
    assert "submitted SLURM array" in there.stdout and "3/3 runs finished on SLURM" in there.stdout
    assert "SLURM" not in here.stdout
    on_slurm = _table(project, "tiny")
    assert [row["variant"] for row in on_slurm] == [row["variant"] for row in local] == ["full", "no_dropout", "no_batch_norm"]
    assert on_slurm == local, "same seeds, same configs, same table"
    again = ok(run(project, env, "labline", "ablate", "ablation=tiny", "seeds=1", "logger.experiment_name=there",
                   "backend=slurm"))
    assert "0 to run" in again.stdout and "submitted SLURM array" not in again.stdout


def test_slurm_words_are_checked_before_anything_runs(project: Path) -> None:
    env = lab_env(project)
    bad = run(project, env, "labline", "ablate", "ablation=tiny", "backend=slurm", "slurm.partiton=gpu")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "slurm.partiton" in bad.stderr and "partition" in bad.stderr
    stray = run(project, env, "labline", "ablate", "ablation=tiny", "slurm.partition=gpu")
    assert stray.returncode == 2 and "backend=slurm" in stray.stderr
