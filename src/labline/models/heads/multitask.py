"""Hard parameter sharing: the backbone is the shared trunk, each named head serves one task."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.losses.multitask import MultiTaskLoss


class MultiTaskHead(nn.Module):
    """One head per task on the same features; outputs ``{name: tensor}``.

    ``head`` builds every task's head (a partial head config, e.g. linear or
    mlp) with that task's output width; ``main`` names the head whose outputs
    are the class predictions that metrics, the confusion matrix and the
    checkpoint monitor see. The losses and their weights live in
    ``loss=multitask`` under the same names.
    """

    def __init__(self, in_features: int, num_classes: int, outputs: Mapping[str, int | None],
                 head: Callable[..., nn.Module], main: str = "class"):
        super().__init__()
        if not outputs:
            raise ConfigError("head.outputs", "is empty", "one entry per task: name -> output width (null = number of classes)")
        if main not in outputs:
            raise ConfigError("head.main", f"'{main}' is not a head of head.outputs", sorted(outputs))
        widths = {name: num_classes if width is None else width for name, width in outputs.items()}
        for name, width in widths.items():
            if not isinstance(width, int) or width < 1:
                raise ConfigError(f"head.outputs.{name}", f"must be a positive integer or null, got {width!r}")
        if widths[main] != num_classes:
            raise ConfigError(f"head.outputs.{main}", f"the main head must output one score per class ({num_classes})", "null")
        self.heads = nn.ModuleDict({name: head(in_features=in_features, num_classes=width) for name, width in widths.items()})
        self.main = main
        self.out_features = widths

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(x) for name, head in self.heads.items()}


def check_pairing(head: nn.Module, loss: nn.Module, num_classes: int) -> None:
    """A multi-task head needs a multi-task loss with exactly the same head names, and vice versa."""
    multi_head, multi_loss = isinstance(head, MultiTaskHead), isinstance(loss, MultiTaskLoss)
    if multi_head != multi_loss:
        key = "loss" if multi_head else "head"
        raise ConfigError(key, "head=multitask and loss=multitask only work together", "head=multitask loss=multitask")
    if multi_head:
        heads, targets = sorted(head.heads), sorted(loss.losses)
        if heads != targets:
            raise ConfigError("loss.tasks", f"names {targets} do not match the heads {heads} of head.outputs", heads)
        loss.check_classes(num_classes)
