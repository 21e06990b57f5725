"""One parent run for a plain Hydra multirun (``labline train -m optimizer.lr=0.01,0.1``), on any launcher.

A Hydra callback (``hydra.callbacks.multirun_parent`` in conf/train.yaml) opens the parent in the launching
process before the first job and closes it after the last. Jobs nest under it the way every labline run
nests: with Hydra's basic launcher they run in this process, inside the open parent; with another launcher
(``hydra/launcher=submitit_slurm``: one SLURM job per config) they find it in ``LABLINE_PARENT_RUN_ID``,
which sbatch exports to each job. A multirun that fails closes its parent FAILED (KILLED on Ctrl-C); one
refused before any job ran a training (bad input) leaves no parent behind. Optuna studies are left alone:
labline's sweeper opens its own study parent.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from labline.studies.sweep.settings import PLUGIN_TARGET
from labline.tracking.lifecycle import PARENT_ENV, RunHandle

KIND = "multirun"
_opened: list[tuple[ExitStack, RunHandle]] = []


def _overrides(config: DictConfig) -> dict[str, str]:
    """The sweep's command-line overrides, ``key -> value list``: what tells this parent's jobs apart."""
    pairs = (o.split("=", 1) for o in config.hydra.overrides.task if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs}


class MultirunParent(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") == PLUGIN_TARGET:
            return
        from labline.core.instantiate import instantiate
        from labline.core.paths import workspace_root
        from labline.tracking.lifecycle import open_run

        destination = instantiate(config.logger, "logger")
        overrides = _overrides(config)
        launcher = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        stack = ExitStack()
        parent = stack.enter_context(open_run(
            destination.store, destination.experiment_name, f"multirun {' '.join(config.hydra.overrides.task)}"[:250],
            tags={"labline.kind": KIND, "launcher": launcher, "sweep_dir": str(config.hydra.sweep.dir)},
            root=workspace_root()))
        parent.log_params(overrides)
        os.environ[PARENT_ENV] = parent.run_id
        _opened.append((stack, parent))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_parent(None)


def close_parent(error: BaseException | None) -> None:
    """End the open multirun parent, if any: FINISHED, or as ``error`` ended the multirun (``labline train``
    calls it when Hydra's multirun raised). A parent none of whose jobs got as far as a run is deleted."""
    if not _opened:
        return
    stack, parent = _opened.pop()
    os.environ.pop(PARENT_ENV, None)
    if error is None:
        stack.close()
        return
    if isinstance(error, SystemExit):  # a job's one-line error, or Hydra's report of a job's exception
        error = RuntimeError(f"a job of the multirun failed (exit {error.code}); the console or the job's log says why")
    stack.__exit__(type(error), error, error.__traceback__)  # open_run records how it ended; the caller re-raises
    if not parent.children():
        parent.store.client.delete_run(parent.run_id)
