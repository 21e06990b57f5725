"""The process a run trains in: torch threads first, then every random number generator.

A contended core makes a step 10-20x slower, so the thread count is set before anything else runs. A
ceiling set from outside caps it: ``LABLINE_MAX_THREADS`` (parallel test workers or anything else that
shares the cores out) and, inside a SLURM allocation, ``SLURM_CPUS_PER_TASK`` (the CPUs the job was given).
The config stays what the user wrote; the process never oversubscribes its share of the cores.

Once SLURM is installed (``srun`` on PATH), Lightning warns on every Trainer outside ``srun`` that srun "is
available but not used": a multi-line hint on stderr that would break labline's one-line errors. labline
starts cluster jobs itself (submitit runs them under srun), so the hint is silenced.
"""

from __future__ import annotations

import os
import warnings

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from labline.core.errors import ConfigError

MAX_THREADS_ENV = "LABLINE_MAX_THREADS"
SLURM_CPUS_ENV = "SLURM_CPUS_PER_TASK"
# 2**32 - 1: numpy's seeds are 32-bit, and seed_everything refuses anything larger.
MAX_SEED = 2**32 - 1


def thread_ceiling() -> int | None:
    """The most torch threads this process may use, when whoever shares the cores out (a test runner, SLURM) says so."""
    limits = [int(v) for v in (os.environ.get(MAX_THREADS_ENV, ""), os.environ.get(SLURM_CPUS_ENV, ""))
              if v.isdigit() and int(v) > 0]
    return min(limits) if limits else None


def runtime_tags() -> dict[str, str]:
    """What a run records of the process it trained in: the torch threads it really used (the config's
    ``threads`` under the ceiling above) and, inside a SLURM job, the job's id (``ARRAY_TASK`` for an array task)."""
    tags = {"torch_threads": str(torch.get_num_threads())}
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        tags["slurm_job_id"] = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def quiet_srun_hint() -> None:
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def setup_runtime(cfg: DictConfig) -> None:
    quiet_srun_hint()
    threads = cfg.get("threads", 2)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError("threads", f"must be a positive integer, got {threads!r}", "1 .. number of cores")
    ceiling = thread_ceiling()
    torch.set_num_threads(min(threads, ceiling) if ceiling else threads)
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"must be an integer in 0 .. {MAX_SEED}, got {seed!r}")
    pl.seed_everything(seed, workers=True, verbose=False)
