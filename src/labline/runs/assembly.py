"""Building everything one Lightning training needs from its config, before any MLflow run exists.

Whatever a user can get wrong (data, datamodule, model, optimizer, callbacks, trainer) is built and checked
here, so a bad value is a one-line error and no run is ever left RUNNING for a typo.

The callbacks labline adds to every training are the named mapping ``run_callbacks`` in the config (epoch
reseeding, the non-finite guard, curves, the two checkpoints, the progress bar): a user may replace one
(another ``_target_``) or remove one (``null``) where that is safe. A constructor that takes ``folder`` (the
run's output folder), ``monitor`` or ``mode`` (the task's) gets them from the run. What labline reads back
cannot be removed: the curves (best epoch, a sweep's objective), the best checkpoint (what is tested), and
the resumable checkpoint while ``resume: true``. The ``callbacks`` group holds the optional ones (early
stopping, EMA) and a study adds its own (a sweep's pruner) through the run's context.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from labline.callbacks.checkpoints import BestCheckpoint, ResumableCheckpoint
from labline.callbacks.epoch_curves import EpochCurves
from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.data.datamodule import DataModule
from labline.data.pipeline import ProcessedData
from labline.data.semi import load_training_data
from labline.data.shifts import Shift
from labline.models.task import Task, TaskContext, build_task
from labline.runs.checkpoints import resolve_checkpoint
from labline.runs.launched import check_world, trainer_plugins
from labline.runs.runtime import setup_runtime
from labline.runs.shift import SHIFT_KEY, check_task, families
from labline.tracking.store import Destination

BUILTINS_KEY = "run_callbacks"
DEFAULT_DATAMODULE = "labline.data.datamodule.ArrayDataModule"
# What each required built-in must be, and why it cannot go.
REQUIRED = {"curves": (EpochCurves, "labline reads the best epoch and the sweep objective from it"),
            "best_checkpoint": (BestCheckpoint, "it is the model labline tests and keeps")}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
RESUMABLE = ("last_checkpoint", (ResumableCheckpoint, "resume: true restarts from it (or set resume=false)"))


@dataclass
class PreparedRun:
    """One training, built and checked: what ``train_and_test`` fits, tests and records."""

    cfg: DictConfig
    config: dict[str, Any]
    data: ProcessedData
    datamodule: DataModule
    task: Task
    trainer: pl.Trainer
    curves: EpochCurves
    destination: Destination
    out_dir: Path
    root: Path
    callbacks: list[pl.Callback]
    # distribution-shift families the trained model is also scored on (the config's ``shift`` node)
    shifts: dict[str, Shift] = field(default_factory=dict)
    # the shift metrics worth printing (clean and each family's summary; every per-set value is in MLflow)
    shift_summary: set[str] = field(default_factory=set)
    _evaluator: pl.Trainer | None = None

    @property
    def evaluator(self) -> pl.Trainer:
        """The trainer that tests: the training one, or, when training ran over several processes, a single-device
        trainer in rank zero with the same callbacks. A distributed sampler pads the test split so every rank gets as
        many batches (duplicating samples) and each rank sees only its shard; one process sees every sample exactly
        once, so the test metrics equal a single-process run's for the same checkpoint."""
        if self.trainer.world_size <= 1:
            return self.trainer
        if self._evaluator is None:
            self._evaluator = build_trainer(self.cfg, self.callbacks, self.out_dir, devices=1, num_nodes=1,
                                            strategy="auto", sync_batchnorm=False)
        return self._evaluator


def _check_positive(cfg: DictConfig, key: str, least: int) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(key, f"must be an integer >= {least}, got {value!r}")


def build_datamodule(cfg: DictConfig, data: ProcessedData) -> DataModule:
    """The task's own datamodule (episodes, bags, paired views) over the processed data, or the array one."""
    for key, least in (("data.batch_size", 1), ("data.num_workers", 0)):
        _check_positive(cfg, key, least)
    node = cfg.task.get("datamodule") or OmegaConf.create({"_target_": DEFAULT_DATAMODULE})
    augment = instantiate(cfg.augment, "augment") if "_target_" in (cfg.get("augment") or {}) else None
    datamodule = instantiate(node, "task.datamodule", _partial_=True)(
        data=data, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.seed, augment=augment)
    if not isinstance(datamodule, DataModule):
        raise ConfigError("task.datamodule._target_", f"{type(datamodule).__name__} does not derive from "
                          "labline.data.datamodule.DataModule", "a DataModule subclass")
    datamodule.pin_memory = pin_memory(cfg)
    return datamodule


def pin_memory(cfg: DictConfig) -> bool:
    """``data.pin_memory``: page-locked batches (``auto``: when training on a GPU, where the copy then overlaps
    compute; on the CPU pinning only costs)."""
    value = OmegaConf.select(cfg, "data.pin_memory", default="auto")
    if value == "auto":
        return not on_cpu(cfg)
    if not isinstance(value, bool):
        raise ConfigError("data.pin_memory", f"must be auto, true or false, got {value!r}", ["auto", "true", "false"])
    return value


def task_context(cfg: DictConfig, datamodule: DataModule) -> TaskContext:
    return TaskContext(cfg, datamodule.input_shape, datamodule.num_classes, datamodule.classes, resolve_checkpoint)


def _builtin(name: str, node: Any, run: dict[str, Any]) -> pl.Callback:
    key = f"{BUILTINS_KEY}.{name}"
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    given = {k: v for k, v in run.items() if target and _accepts(target, k)}
    return instantiate(node, key, **given)


def _accepts(target: str, name: str) -> bool:
    """Whether the constructor names ``name`` itself (a ``**kwargs`` passed on to Lightning does not count: the
    resumable checkpoint must not be given the task's monitor)."""
    try:
        return name in inspect.signature(get_object(target)).parameters
    except Exception:  # an unimportable target: instantiate() reports it as a one-line error
        return False


def builtin_callbacks(cfg: DictConfig, out_dir: Path, task: Task) -> list[pl.Callback]:
    """The ``run_callbacks`` mapping, built, with the required ones checked."""
    nodes = cfg.get(BUILTINS_KEY) or {}
    required = dict(REQUIRED)
    if cfg.get("resume", True):
        required[RESUMABLE[0]] = RESUMABLE[1]
    for name, (kind, why) in required.items():
        if not nodes.get(name):
            raise ConfigError(f"{BUILTINS_KEY}.{name}", f"cannot be removed: {why}", f"a {kind.__name__} (or subclass)")
    run = {"folder": out_dir, "monitor": task.monitor, "mode": task.monitor_mode}
    built = {name: _builtin(name, node, run) for name, node in nodes.items() if node}
    for name, (kind, why) in required.items():
        if not isinstance(built[name], kind):
            raise ConfigError(f"{BUILTINS_KEY}.{name}._target_", f"must build a {kind.__name__}: {why}",
                              f"a subclass of {kind.__module__}.{kind.__name__}")
    if not cfg.trainer.get("enable_progress_bar", True):
        built.pop("progress_bar", None)  # Lightning refuses a progress bar callback on a trainer without one
    return list(built.values())


def prepare_run(cfg: DictConfig, out_dir: Path, root: Path, extra_callbacks: Sequence[pl.Callback] = ()) -> PreparedRun:
    """Data, datamodule, task, callbacks and trainer of one training; ``extra_callbacks`` are a study's."""
    setup_runtime(cfg)
    config = to_plain(cfg)
    data = load_training_data(cfg, root)
    datamodule = build_datamodule(cfg, data)
    task = build_task(task_context(cfg, datamodule))
    shifts = families(cfg.get(SHIFT_KEY))
    if shifts:
        check_task(task, cfg)
    task = compile_task(cfg, task)
    _check_positive(cfg, "checkpoint_every_n_epochs", 1)
    builtins = builtin_callbacks(cfg, out_dir, task)
    curves = next(c for c in builtins if isinstance(c, EpochCurves))
    optional = [instantiate(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items() if node]
    callbacks = [*builtins, *optional, *extra_callbacks]
    _check_distributed(cfg)
    trainer = build_trainer(cfg, callbacks, out_dir)
    destination = instantiate(cfg.logger, "logger")
    return PreparedRun(cfg, config, data, datamodule, task, trainer, curves, destination, out_dir, root, callbacks, shifts)


def on_cpu(cfg: DictConfig) -> bool:
    """Whether the trainer runs on the CPU (``accelerator: cpu``, or ``auto`` without a GPU)."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default="auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def compile_task(cfg: DictConfig, task: Task) -> Task:
    """``compile``: the task's steps through ``torch.compile`` (``true`` or a mode), the same module kept (Lightning's
    ``from_compiled``), so state dicts and checkpoints are those of the plain model and either loads the other.
    Compilation itself happens at the first step; what it needs on this machine (a C++ compiler for CPU code,
    triton for GPU code) is checked here, before any run."""
    value = cfg.get("compile", False)
    if value is False or value is None:
        return task
    mode = "default" if value is True else value
    if mode not in COMPILE_MODES:
        raise ConfigError("compile", f"{value!r} is not a torch.compile mode", ["false", "true", *COMPILE_MODES])
    if on_cpu(cfg):
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            raise ConfigError("compile", f"torch.compile builds C++ for CPU code and finds no compiler ({compiler}; "
                              "$CXX names another)", "install g++ (apt-get install g++), or compile=false")
    elif importlib.util.find_spec("triton") is None:
        raise ConfigError("compile", "torch.compile needs triton for GPU code, which is not installed",
                          "the CUDA build of torch (it brings triton), or compile=false")
    from lightning.pytorch.utilities.compile import from_compiled

    return from_compiled(torch.compile(task, mode=mode))


def _check_distributed(cfg: DictConfig) -> None:
    """What Lightning or torch would refuse only once the ranks have started (after the MLflow run exists)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    if isinstance(strategy, str) and "spawn" in strategy:
        raise ConfigError("trainer.strategy", f"'{strategy}' is not supported: spawned ranks get a pickled copy of the "
                          "run and hand back only the weights, not the curves", "ddp (or auto)")
    if OmegaConf.select(cfg, "trainer.sync_batchnorm", default=False) and on_cpu(cfg):
        raise ConfigError("trainer.sync_batchnorm", "torch's SyncBatchNorm needs GPUs: DistributedDataParallel refuses it "
                          "on CPU modules", "false on the CPU; true with trainer=gpu trainer.devices=N")
    check_world(cfg)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], out_dir: Path, **overrides: Any) -> pl.Trainer:
    """The configured Trainer with labline's callbacks (``overrides``: Trainer arguments that win over the config)."""
    bar = any(isinstance(c, pl.callbacks.ProgressBar) for c in callbacks)
    return instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=False, default_root_dir=str(out_dir),
                       enable_model_summary=False, enable_progress_bar=bar, **{**trainer_plugins(cfg), **overrides})
