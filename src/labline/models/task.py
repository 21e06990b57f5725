"""What labline asks of a learning paradigm, and what one is built from.

A paradigm is one ``Task`` subclass and one YAML file in ``conf/task/`` whose ``_target_`` names it. Every
task is built the same way: ``Task(context, **options)``, the options being the YAML's keys (``monitor``,
``top_k``, ...; a ``datamodule`` node and a ``runner`` are labline's and never reach the class). The
context holds what the data decided (input shape, classes, the head's width) and builds the configured
parts on request, so a task asks only for the parts it uses (a prototypical network no head) and no task
reloads data to learn its input shape.

What labline reads back from a task is declared here, not looked up by name:

- ``monitor`` / ``monitor_mode``: the metric that picks the best checkpoint (and a sweep's objective);
- ``per_sample_predictions``: the test loop yields one probability row per sample (a ``(K, H, W)`` map for
  segmentation), recorded with
  ``keep_test_predictions`` and read with ``test_probabilities`` (confusion matrix, ``predictions/*.npz``,
  ensembles); episodic tasks score episodes instead and leave it False;
- ``test_artifacts(folder)``: files of its own to keep after the test (attention maps, episode scores);
- ``run_tags()``: tags for the run (a distilled student's teacher).

Hyperparameters hold the resolved config and the options, never modules, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from labline.core.config import to_plain
from labline.core.errors import ConfigError
from labline.core.instantiate import instantiate
from labline.models.checkpoints import CheckpointRef, CheckpointResolver, local_checkpoint
from labline.models.optimization import configure_optimization
from labline.models.parts import build_backbone, feature_width

MODES = ("max", "min")
# Keys of the task config that labline reads itself (never passed to the task class): ``datamodule`` (the
# task's own datamodule over the processed data) and ``runner`` (a function that runs a non-Lightning task,
# such as a scikit-learn baseline).
TASK_KEYS = ("datamodule", "runner")


@dataclass
class TaskContext:
    """What a task is built from: the composed config, what the data decided, and a checkpoint resolver.

    ``num_classes`` is the width the head predicts (for zero-shot learning, the length of a class
    description); ``classes`` are the names of the classes the run is scored on. ``parts`` holds modules
    built already (``of_parts``: a notebook, a test), returned instead of building them from the config.
    """

    config: DictConfig
    input_shape: tuple[int, ...]
    num_classes: int
    classes: list[str] | None = None  # None: "0" .. "num_classes - 1"
    resolve_checkpoint: CheckpointResolver = field(default=local_checkpoint)
    parts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        if self.classes is None:
            self.classes = [str(c) for c in range(self.num_classes)]

    @classmethod
    def of_parts(cls, input_shape: tuple[int, ...], num_classes: int, config: dict[str, Any] | None = None,
                 **parts: Any) -> TaskContext:
        """A context over modules built by hand: ``backbone``, ``head``, ``loss``, ``optimizer`` (a factory of the
        parameters), ``scheduler`` (None: none); a part the task asks for and that is not given is an error.
        ``config`` is what the task's hyperparameters record as its config."""
        return cls(OmegaConf.create(config or {}), input_shape, num_classes, parts={"scheduler": None, **parts})

    @cached_property
    def plain_config(self) -> dict[str, Any]:
        return to_plain(self.config)

    def _given(self, name: str) -> Any:
        if name not in self.parts:
            raise ConfigError(name, f"this context was built from parts and has no {name}", sorted(self.parts))
        return self.parts[name]

    def backbone(self) -> tuple[nn.Module, int]:
        """``(backbone, feature width)``; ``backbone.weights`` resolved through the context."""
        if self.parts:
            backbone = self._given("backbone")
            return backbone, feature_width(backbone, self.input_shape)
        return build_backbone(self.config.backbone, self.input_shape, self.resolve_checkpoint)

    def head(self, in_features: int, num_classes: int | None = None) -> nn.Module:
        if self.parts:
            return self._given("head")
        return instantiate(self.config.head, "head", in_features=in_features,
                           num_classes=self.num_classes if num_classes is None else num_classes)

    def loss(self) -> nn.Module:
        return self._given("loss") if self.parts else instantiate(self.config.loss, "loss")

    def optimizer(self) -> Callable[..., torch.optim.Optimizer]:
        return self._given("optimizer") if self.parts else instantiate(self.config.optimizer, "optimizer")

    def scheduler(self) -> Callable[..., Any] | None:
        if self.parts:
            return self.parts.get("scheduler")
        node = self.config.get("scheduler") or {}
        return instantiate(node, "scheduler") if "_target_" in node else None

    def checkpoint(self, source: str, key: str, valid: str) -> CheckpointRef:
        """A checkpoint named in the config (a file or an MLflow run id), as a local file."""
        return self.resolve_checkpoint(source, key, valid)


class Task(pl.LightningModule):
    """The base of every learning paradigm (see the module docstring for the contract)."""

    per_sample_predictions: ClassVar[bool] = False

    def __init__(self, context: TaskContext, monitor: str, monitor_mode: str, **options: Any):
        super().__init__()
        if monitor_mode not in MODES:
            raise ConfigError("task.monitor_mode", f"unknown mode '{monitor_mode}'", MODES)
        self.save_hyperparameters({"config": context.plain_config, "num_classes": context.num_classes, "monitor": monitor,
                                   "monitor_mode": monitor_mode, **options})
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.num_classes = context.num_classes
        self.optimizer_factory, self.scheduler_factory = context.optimizer(), context.scheduler()
        self._test_predictions: list[tuple[torch.Tensor, torch.Tensor]] = []

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Every value a task logs (``log_dict`` included) is reduced over the ranks of a distributed training:
        Lightning otherwise keeps each rank's own, and rank zero would record the metrics of its shard only.
        Values torchmetrics already synchronised come out unchanged (the mean of equal values)."""
        if self._trainer is not None and self._trainer.world_size > 1:
            kwargs["sync_dist"] = True
        super().log(name, value, *args, **kwargs)

    def configure_optimizers(self) -> Any:
        return configure_optimization(self, self.optimizer_factory, self.scheduler_factory)

    def on_test_epoch_start(self) -> None:
        """Subclasses that override it call ``super()``: each test loop starts with no kept predictions."""
        self._test_predictions = []

    def keep_test_predictions(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch's ``(B, K)`` class probabilities and ``(B,)`` targets, in loader order (per pixel: ``(B, K, H, W)``
        and ``(B, H, W)``)."""
        self._test_predictions.append((probs.detach().float().cpu(), targets.detach().cpu()))

    def test_probabilities(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(probs, targets)`` of the last test loop; None for tasks without per-sample probabilities."""
        if not self.per_sample_predictions or not self._test_predictions:
            return None
        probs, targets = zip(*self._test_predictions, strict=True)
        return torch.cat(probs).numpy(), torch.cat(targets).numpy()

    def test_artifacts(self, folder: Path) -> list[Path]:
        return []

    def run_tags(self) -> dict[str, str]:
        return {}


def build_task(context: TaskContext) -> Task:
    """The task of ``context.config.task``, with its optimizer built once now, so a bad lr fails before training."""
    node = context.config.task
    factory = instantiate(OmegaConf.masked_copy(node, [k for k in node if k not in TASK_KEYS]), "task", _partial_=True)
    if not (isinstance(factory.func, type) and issubclass(factory.func, Task)):
        raise ConfigError("task._target_", f"{node._target_} does not derive from labline.models.task.Task",
                          "a Task subclass (README: adding a task)")
    try:
        task = factory(context=context)
    except TypeError as exc:  # an option the class does not take (e.g. `+task.typo=1`); anything else is a bug
        if "keyword argument" not in str(exc):
            raise
        raise ConfigError("task", " ".join(str(exc).split()), "the options of the task class") from None
    try:
        task.configure_optimizers()
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError("optimizer", " ".join(str(exc).split())) from None
    return task
