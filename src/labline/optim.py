"""Optimizer and LR-scheduler assembly shared by every task module.

Tasks call ``configure_optimization`` from ``configure_optimizers`` so that
parameter grouping (e.g. no weight decay on norms and biases) and scheduler
stepping rules live in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def configure_optimization(module: nn.Module, optimizer_factory: Callable[..., torch.optim.Optimizer],
                           scheduler_factory: Callable[..., Any] | None) -> Any:
    """What Lightning's ``configure_optimizers`` returns for these factories."""
    optimizer = optimizer_factory(module.parameters())
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"}}
