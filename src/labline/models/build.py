"""Assemble backbone + head + loss + optimizer into a task module from config.

Backbones receive the datamodule's input shape when their constructor takes
``in_shape``; any other ``torch.nn.Module`` reachable by ``_target_`` works
too, its feature width found by one dummy forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from labline.building import accepts, build
from labline.errors import ConfigError
from labline.models.backbone_options import apply_options, split_options


def build_backbone(node: DictConfig, in_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """The backbone and its feature width, with labline's ``init``/``weights``/``freeze`` keys applied
    (see ``backbone_options``): they are popped first, so any module class works under ``_target_``."""
    node, options = split_options(node)
    try:
        takes_shape = accepts(node._target_, "in_shape")
    except Exception:  # a missing or unimportable _target_: build() below reports it as a one-line ConfigError
        takes_shape = False
    backbone = build(node, "backbone", **({"in_shape": list(in_shape)} if takes_shape else {}))
    if not isinstance(backbone, nn.Module):
        raise ConfigError("backbone._target_", f"built a {type(backbone).__name__}, not a torch.nn.Module")
    width = getattr(backbone, "out_features", None)
    if width is None:
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                width = backbone(torch.zeros(2, *in_shape)).flatten(1).shape[1]
        except Exception as exc:
            raise ConfigError("backbone", f"cannot run on inputs of shape {tuple(in_shape)}: {exc}") from None
        backbone.train(was_training)
    apply_options(backbone, options)
    return backbone, int(width)


# Keys of the task config that labline reads itself (never passed to the task class):
# ``datamodule`` (the task's own datamodule over the processed data) and ``runner``
# (a function that runs a non-Lightning task, such as a scikit-learn baseline).
TASK_KEYS = ("datamodule", "runner")


def build_task(cfg: DictConfig, in_shape: Sequence[int], num_classes: int, plain_cfg: dict[str, Any]) -> pl.LightningModule:
    backbone, width = build_backbone(cfg.backbone, in_shape)
    head = build(cfg.head, "head", in_features=width, num_classes=num_classes)
    loss = build(cfg.loss, "loss")
    optimizer = build(cfg.optimizer, "optimizer")
    scheduler = build(cfg.scheduler, "scheduler") if "_target_" in cfg.scheduler else None
    task_node = OmegaConf.masked_copy(cfg.task, [k for k in cfg.task if k not in TASK_KEYS])
    task = build(task_node, "task", _partial_=True)
    module = task(backbone=backbone, head=head, loss=loss, optimizer=optimizer, scheduler=scheduler,
                  num_classes=num_classes, config=plain_cfg)
    _check_optimizer(module)
    return module


def _check_optimizer(module: pl.LightningModule) -> None:
    """Build the optimizer once now, so a bad lr fails before training, not inside fit()."""
    try:
        module.configure_optimizers()
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError("optimizer", " ".join(str(exc).split())) from None
