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


SLURM_TASK = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "4321",
              "SLURM_NODELIST": "node[7-8]", "SLURM_JOB_NAME": "train"}


@pytest.fixture
def slurm_task(monkeypatch):
    """The environment srun gives task 1 of a 2-task job (what Lightning's SLURMEnvironment reads)."""
    for key in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        # set before deleting, so that monkeypatch removes them again: Lightning's SLURMEnvironment writes
        # MASTER_ADDR/MASTER_PORT (15000 + job id) into os.environ, and a later test's ranks would inherit them
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_a_task_srun_started_knows_its_rank_and_rank_zeros_rendezvous(slurm_task) -> None:
    from labline.runs.launched import place

    where = place()
    assert (where.rank, where.world_size, where.launcher) == (1, 2, "srun")
    assert (where.address, where.port) == ("node7", 15000 + 4321), "Lightning's own choice for the SLURM job"


@pytest.mark.parametrize(("overrides", "key"), [(["trainer.devices=3"], "trainer.devices"),
                                                (["trainer.devices=1"], "trainer.devices"),
                                                (["trainer.num_nodes=2"], "trainer.devices")])
def test_a_trainer_that_does_not_match_the_launched_world_is_refused_first(compose, slurm_task, overrides, key) -> None:
    from labline.runs.launched import check_world

    check_world(compose("trainer=ddp", "trainer.devices=2"))
    with pytest.raises(ConfigError) as err:
        check_world(compose("trainer=ddp", *overrides))
    assert err.value.key == key and "srun started 2" in err.value.problem


def test_the_batch_script_of_a_multi_task_job_is_not_a_rank(compose, slurm_task) -> None:
    from labline.runs.launched import check_world

    slurm_task.delenv("SLURM_STEP_ID")
    with pytest.raises(ConfigError) as err:
        check_world(compose("trainer=ddp"))
    assert err.value.key == "SLURM_NTASKS" and "srun" in err.value.valid


def test_several_machines_need_a_launcher(compose, monkeypatch) -> None:
    from labline.runs.launched import check_world

    for key in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError) as err:
        check_world(compose("trainer=ddp", "trainer.num_nodes=2"))
    assert err.value.key == "trainer.num_nodes"


def test_in_a_one_task_allocation_lightning_starts_the_ranks_itself(compose, slurm_task, tmp_path) -> None:
    """SLURM's world of one would otherwise make Lightning train `devices: 2` in a single process."""
    for key, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        slurm_task.setenv(key, value)
    slurm_task.delenv("LOCAL_RANK", raising=False)
    trainer = build_trainer(compose("trainer=ddp", "threads=1"), [], tmp_path)
    assert type(trainer.strategy.cluster_environment).__name__ == "LightningEnvironment"
    assert trainer.world_size == 2
    single = build_trainer(compose("trainer=cpu", "threads=1"), [], tmp_path)
    assert single.world_size == 1 and "plugins" not in compose("trainer=cpu").trainer


@pytest.mark.parametrize(("overrides", "pinned"), [(["trainer=cpu"], False), (["trainer=gpu"], True),
                                                   (["trainer=cpu", "data.pin_memory=true"], True),
                                                   (["trainer=gpu", "data.pin_memory=false"], False)])
def test_pinned_memory_is_on_for_gpu_training(compose, overrides, pinned) -> None:
    from labline.data.semi import load_training_data

    cfg = compose(*overrides)
    datamodule = build_datamodule(cfg, load_training_data(cfg, ROOT))
    assert datamodule.pin_memory is pinned
    assert datamodule._loader("val", shuffle=False).pin_memory is pinned


def test_pin_memory_takes_auto_true_or_false(compose) -> None:
    from labline.runs.assembly import pin_memory

    with pytest.raises(ConfigError) as err:
        pin_memory(compose("data.pin_memory=sometimes"))
    assert err.value.key == "data.pin_memory"


def test_compile_modes_and_a_missing_compiler_are_refused_before_any_run(compose, tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_run(compose("compile=fastest", "threads=1"), tmp_path, ROOT)
    assert err.value.key == "compile" and "max-autotune" in str(err.value.valid)
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(ConfigError) as err:
        prepare_run(compose("compile=true", "threads=1"), tmp_path, ROOT)
    assert err.value.key == "compile" and "no-such-compiler" in err.value.problem


@pytest.mark.e2e
def test_a_compiled_task_trains_on_the_cpu_and_keeps_plain_weights(compose, tmp_path) -> None:
    """`compile=true` on the CPU (inductor builds C++ with g++: about 40 s of compiling on 2 shared cores)."""
    cfg = compose("compile=true", "backbone=mlp", "callbacks=none", "threads=1", "trainer.max_epochs=1",
                  "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "trainer.enable_progress_bar=false")
    run = prepare_run(cfg, tmp_path, ROOT)
    assert run.task._compiler_ctx is not None, "the task's steps go through torch.compile"
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.trainer.global_step == 2 and torch.isfinite(run.trainer.callback_metrics["train/loss"])
    assert not any("_orig_mod" in key for key in run.task.state_dict()), "checkpoints hold the plain model's keys"


def test_ntasks_without_ntasks_per_node_is_said_once_by_task_zero(slurm_task) -> None:
    from labline.runs.launched import place

    slurm_task.delenv("SLURM_NTASKS_PER_NODE")
    with pytest.raises(SystemExit) as quiet:
        place()  # task 1
    assert quiet.value.code == 2
    slurm_task.setenv("SLURM_PROCID", "0")
    with pytest.raises(ConfigError) as err:
        place()
    assert err.value.key == "SLURM_NTASKS" and "--ntasks-per-node" in err.value.valid


def test_reading_a_srun_place_leaves_no_rendezvous_behind_for_later_tests() -> None:
    """Guards the fixture above: a leaked MASTER_PORT=19321 made every later DDP test in the worker collide."""
    assert "MASTER_PORT" not in os.environ and "SLURM_JOB_ID" not in os.environ
