"""Model complexity: parameter counts and the cost of one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_complexity(module: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Parameters, and FLOPs / MACs of one forward pass on a single sample of ``input_shape`` (no batch dim).

    Counted by torch's own ``FlopCounterMode`` (matmuls, convolutions, attention;
    element-wise ops such as activations and norms are not counted), which
    reports FLOPs = 2 x MACs. The module runs in eval mode without gradients,
    so dropout and batch-norm statistics are untouched, and its mode is restored.
    Shared parameters count once.
    """
    params = list(module.parameters())
    reference = params[0] if params else torch.empty(0)
    dtype = reference.dtype if reference.is_floating_point() else torch.float32
    x = torch.zeros(1, *input_shape, dtype=dtype, device=reference.device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    flops = int(counter.get_total_flops())
    return {"params": sum(p.numel() for p in params), "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "flops": flops, "macs": flops // 2}
