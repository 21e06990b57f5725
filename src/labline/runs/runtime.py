"""The process a run trains in: torch threads first, then every random number generator.

A contended core makes a step 10-20x slower, so the thread count is set before anything else runs. A
ceiling set from outside (``LABLINE_MAX_THREADS``: parallel test workers or anything else that shares
the cores out) caps it: the config stays what the user wrote, the process never
oversubscribes its share of the cores.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from labline.core.errors import ConfigError

MAX_THREADS_ENV = "LABLINE_MAX_THREADS"
# 2**32 - 1: numpy's seeds are 32-bit, and seed_everything refuses anything larger.
MAX_SEED = 2**32 - 1


def thread_ceiling() -> int | None:
    """The most torch threads this process may use, when whoever shares the cores out says so."""
    value = os.environ.get(MAX_THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def setup_runtime(cfg: DictConfig) -> None:
    threads = cfg.get("threads", 2)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError("threads", f"must be a positive integer, got {threads!r}", "1 .. number of cores")
    ceiling = thread_ceiling()
    torch.set_num_threads(min(threads, ceiling) if ceiling else threads)
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", f"must be an integer in 0 .. {MAX_SEED}, got {seed!r}")
    pl.seed_everything(seed, workers=True, verbose=False)
