"""``hydra/sweeper=labline_optuna``: the Hydra side of labline's Optuna sweeper.

Hydra imports every module under ``hydra_plugins`` on each start (even for a
single run), and only accepts plugin classes defined here; so this module holds
a thin class and the config node, and Optuna is imported when a sweep starts.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from labline.studies.sweep.settings import SweeperSettings

ConfigStore.instance().store(group="hydra/sweeper", name="labline_optuna", node=SweeperSettings, provider="labline")


class LablineOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from labline.studies.sweep.sweeper import OptunaSweep

        self.sweep_impl = OptunaSweep(settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweep_impl.sweep(arguments)
