"""The ``hydra.sweeper`` keys of ``hydra/sweeper=labline_optuna``.

Hydra imports its plugins on every start, so this schema lives in a module
that imports nothing heavy; docs/sweeps.md explains each key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labline.studies.cluster.slurm import SlurmSettings

PLUGIN_TARGET = "hydra_plugins.labline_optuna_sweeper.labline_optuna_sweeper.LablineOptunaSweeper"


@dataclass
class SweeperSettings:
    _target_: str = PLUGIN_TARGET
    # null: the hparams_search option's name (or "labline").
    study_name: Any = None
    # null: sqlite:///<project>/optuna.db. Any SQLAlchemy URL (RDB storage) or a journal file path.
    storage: Any = None
    # maximize / minimize, or a list for multi-objective studies (one per objective).
    direction: Any = "maximize"
    # Keys of the trial's result to optimise: best_value (task.monitor at its best epoch), params, flops, macs.
    objective: Any = "best_value"
    # Finished (COMPLETE + PRUNED) trials the study should hold in total; re-running resumes up to it.
    n_trials: int = 20
    # 1: trials run in this process. N > 1: N worker processes share the study, torch threads = cores / N.
    # With backend slurm: N array tasks (workers) on the cluster.
    n_jobs: int = 1
    # local: worker processes on this machine; slurm: a SLURM job array through submitit (docs/cluster.md)
    backend: str = "local"
    # How each array task is submitted (partition, time_min, cpus_per_task, mem, gres, additional, wait, ...)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    # Stop the sweep after this many FAILED trials in one invocation.
    max_failures: int = 3
    # name: tpe, random, grid, cmaes, nsga2; seed and any other key go to the Optuna sampler.
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    # name: hyperband, median, successive_halving, none; other keys go to the Optuna pruner. Hyperband by
    # default: Optuna's benchmarks found it the best pruner for TPE (median for random search).
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "hyperband"})
    # Seconds between liveness records of a running trial (RDB storages); a trial silent for twice
    # as long is FAILED as interrupted when the study is next used. 0: no heartbeats.
    heartbeat_interval: int = 10
    # Where <study>_<storage>_best.yaml is written; null: the project's conf/experiment.
    best_config_dir: Any = None
    # Search space in Hydra's sweep syntax: key -> choice(...), range(...), interval(...), tag(log, interval(...)).
    params: dict[str, Any] = field(default_factory=dict)


def as_list(value: Any) -> list[Any]:
    """``direction`` and ``objective`` accept one value or a list of them."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]
