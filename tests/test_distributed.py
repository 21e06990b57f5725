"""Distributed training pieces that need no second process: the thread share of each rank, what is refused up front,
and that ``trainer.sync_batchnorm`` reaches Lightning, which converts every BatchNorm of a labline model."""

from __future__ import annotations

import os

import pytest
import torch

from labline.core.errors import ConfigError
from labline.models.task import build_task
from labline.runs.assembly import build_datamodule, build_trainer, prepare_run, task_context
from labline.runs.runtime import rank_threads, ranks_per_node
from testroot import ROOT


@pytest.mark.parametrize(("devices", "ranks"), [(1, 1), (2, 2), ([0, 1, 2], 3), ("auto", 1), ("4", 4)])
def test_ranks_per_node_reads_trainer_devices(compose, devices, ranks) -> None:
    cfg = compose()
    cfg.trainer.devices = devices
    assert ranks_per_node(cfg) == ranks


def test_each_rank_gets_at_most_its_share_of_the_cores(compose, monkeypatch) -> None:
    monkeypatch.delenv("LABLINE_MAX_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cores = len(os.sched_getaffinity(0))
    cfg = compose("trainer=ddp", "trainer.devices=2")
    assert rank_threads(cfg, 64) == max(1, cores // 2)
    assert rank_threads(cfg, 1) == 1
    assert rank_threads(compose("trainer=cpu"), 64) == 64  # one process: the config's count


@pytest.mark.parametrize(("override", "key"), [("+trainer.strategy=ddp_spawn", "trainer.strategy"),
                                               ("trainer.sync_batchnorm=true", "trainer.sync_batchnorm")])
def test_what_torch_or_lightning_would_refuse_after_the_ranks_started_is_refused_first(compose, tmp_path, override,
                                                                                       key) -> None:
    overrides = ["trainer=ddp", override] if override.startswith("trainer.sync") else ["trainer=cpu", override]
    with pytest.raises(ConfigError) as err:
        prepare_run(compose(*overrides, "threads=1"), tmp_path, ROOT)
    assert err.value.key == key


def test_sync_batchnorm_reaches_lightning_and_converts_every_batchnorm(compose, tmp_path) -> None:
    cfg = compose("trainer=ddp", "trainer.sync_batchnorm=true", "threads=1")
    from labline.data.semi import load_training_data

    task = build_task(task_context(cfg, build_datamodule(cfg, load_training_data(cfg, ROOT))))
    trainer = build_trainer(cfg, [], tmp_path)
    converted = trainer.strategy._layer_sync.apply(task)  # what DDPStrategy.setup does to the model
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)


def test_rank_zero_points_the_launcher_at_the_rank_entry_and_restores_its_process(compose, tmp_path, monkeypatch) -> None:
    """Inside the block Lightning would re-run ``labline/ranks.py`` with the plan; after it, the process is as before
    (the next training in it, a sweep's next trial, must start its own ranks)."""
    import json
    import sys

    from labline.runs.ranks import ENTRY, PLAN_ENV, launching_ranks, rank_plan

    cfg = compose("trainer=ddp", "threads=1")
    trainer = build_trainer(cfg, [], tmp_path)
    argv = list(sys.argv)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with launching_ranks(trainer, {"seed": 3}, tmp_path, ROOT, None):
        assert sys.argv[0] == str(ENTRY) and ENTRY.exists()
        plan = json.loads(os.environ[PLAN_ENV])
        assert plan["config"] == {"seed": 3} and plan["out_dir"] == str(tmp_path.resolve()) and plan["checkpoint"] is None
        os.environ["LOCAL_RANK"] = "0"  # what Lightning's launcher exports in rank zero
        assert rank_plan() is None, "rank zero never follows its own plan"
        os.environ["LOCAL_RANK"] = "1"
        assert rank_plan() == plan
    assert sys.argv == argv and PLAN_ENV not in os.environ and "LOCAL_RANK" not in os.environ
