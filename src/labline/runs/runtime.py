"""The process a run trains in: torch threads first, then every random number generator.

A contended core makes a step 10-20x slower, so the thread count is set before anything else runs. A
ceiling set from outside caps it: ``LABLINE_MAX_THREADS`` (parallel test workers or anything else that
shares the cores out) and, inside a SLURM allocation, ``SLURM_CPUS_PER_TASK`` (the CPUs the job was given).
The config stays what the user wrote; the process never oversubscribes its share of the cores. A training
over several processes on one node (``trainer.devices`` > 1) shares the node's cores among its ranks: each rank
uses at most cores / ranks threads (and says so in ``OMP_NUM_THREADS``, which Lightning's launcher and the
ranks it starts read instead of choosing their own count).
Libraries' console notices (Lightning's srun hint and tips, MLflow's INFO lines) are silenced here too, through
``reporting.console.quiet_libraries`` (``verbose=true`` keeps them).
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from labline.core.values import check_epochs, check_seed, check_threads
from labline.reporting.console import quiet_libraries

MAX_THREADS_ENV = "LABLINE_MAX_THREADS"
SLURM_CPUS_ENV = "SLURM_CPUS_PER_TASK"


def thread_ceiling() -> int | None:
    """The most torch threads this process may use, when whoever shares the cores out (a test runner, SLURM) says so."""
    limits = [int(v) for v in (os.environ.get(MAX_THREADS_ENV, ""), os.environ.get(SLURM_CPUS_ENV, ""))
              if v.isdigit() and int(v) > 0]
    return min(limits) if limits else None


def ranks_per_node(cfg: DictConfig) -> int:
    """How many processes of this training share the node: ``trainer.devices`` (a count, or a list of devices;
    ``auto`` counts as one)."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if isinstance(devices, ListConfig | list | tuple):
        return max(len(devices), 1)
    if isinstance(devices, str):
        return int(devices) if devices.isdigit() else 1
    return max(int(devices), 1) if isinstance(devices, int) else 1


def rank_threads(cfg: DictConfig, threads: int) -> int:
    """``threads`` capped by the ceiling from outside and, for several ranks per node, by cores / ranks."""
    ranks = ranks_per_node(cfg)
    limits = [threads, thread_ceiling() or threads]
    if ranks > 1:
        limits.append(max(1, len(os.sched_getaffinity(0)) // ranks))
    return min(limits)


def runtime_tags() -> dict[str, str]:
    """What a run records of the process it trained in: the torch threads it really used (the config's
    ``threads`` under the ceiling above) and, inside a SLURM job, the job's id (``ARRAY_TASK`` for an array task)."""
    tags = {"torch_threads": str(torch.get_num_threads())}
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        tags["slurm_job_id"] = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def setup_runtime(cfg: DictConfig) -> None:
    quiet_libraries(bool(cfg.get("verbose", False)))
    threads = check_threads(cfg.get("threads", 2))
    check_epochs(cfg.get("trainer"))
    chosen = rank_threads(cfg, threads)
    torch.set_num_threads(chosen)
    if ranks_per_node(cfg) > 1:
        os.environ["OMP_NUM_THREADS"] = str(chosen)
    seed = check_seed(cfg.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
