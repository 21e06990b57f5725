"""Blocks the backbones share, so each architecture is only its layout.

Every conv backbone is assembled from ``ConvNormAct`` units; the families
differ in how they wire them (plain stages, residual blocks, depthwise-
separable pairs, causal dilated pairs, patches for a transformer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers

# Images at least this wide get a downsampling stem (ImageNet-style); smaller ones (digits, CIFAR) keep full resolution.
LARGE_IMAGE = 64

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}
_POOLS: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d}


def norm_map(kind: str, channels: int, dims: int) -> nn.Module:
    return layers.norm_seq(kind, channels) if dims == 1 else layers.norm2d(kind, channels)


def downsample(size: int) -> tuple[int, int]:
    """``(stride, new size)``: stride 2 only while the map is at least 2 wide, so 8x8 digits never shrink below 1x1."""
    return (2, (size + 1) // 2) if size >= 2 else (1, size)


def stage_plan(depths: Sequence[int], widths: Sequence[int], size: int) -> list[tuple[int, int]]:
    """``(width, stride)`` per block of stages of ``depths[i]`` blocks of ``widths[i]`` (ResNet, MobileNet layout):
    each stage after the first starts with a ``downsample`` stride."""
    depths, widths = layers.positive_ints(depths, "backbone.depths"), layers.positive_ints(widths, "backbone.widths")
    if len(depths) != len(widths):
        raise ConfigError("backbone.depths", f"has {len(depths)} stages but backbone.widths has {len(widths)}",
                          "lists of equal length")
    plan = []
    for stage, (depth, width) in enumerate(zip(depths, widths, strict=True)):
        for i in range(depth):
            stride = 1
            if stage > 0 and i == 0:
                stride, size = downsample(size)
            plan.append((width, stride))
    return plan


def effective_kernel(kernel_size: int, dilation: int) -> int:
    """Span of input one output of a dilated conv sees: ``k + (k-1)(r-1)``."""
    return kernel_size + (kernel_size - 1) * (dilation - 1)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation with "same" padding. The conv has a bias only when no norm follows it
    (a norm's shift makes the bias redundant); ``activation=None`` leaves the output linear (before a residual sum)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, *, dims: int = 2, groups: int = 1,
                 norm: str = "batch", activation: str | None = "relu", bias: bool | None = None):
        if kernel_size % 2 == 0:
            raise ConfigError("backbone.kernel_size", f"must be odd so convs keep the input size, got {kernel_size}", "3, 5, 7")
        conv = _CONVS[dims](c_in, c_out, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                            bias=norm == "none" if bias is None else bias)
        modules = [conv, norm_map(norm, c_out, dims)]
        if activation is not None:
            modules.append(layers.activation(activation))
        super().__init__(*modules)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): a gate in (0, 1) per channel, computed from the channel's
    global average, scales that channel. Works on maps of any spatial rank."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x.flatten(2).mean(-1))
        return x * weights.view(*weights.shape, *[1] * (x.ndim - 2))


class DepthwiseSeparableConv(nn.Sequential):
    """MobileNet's factorised conv: a k x k conv per channel (groups = channels), then a 1x1 conv mixing channels.
    3x3 from 3 to 4 channels costs 3*3*3 + 3*4 = 39 weights instead of 108."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, *, norm: str = "batch",
                 activation: str = "relu", se: bool = False, bias: bool | None = None):
        modules = [ConvNormAct(c_in, c_in, kernel_size, stride, groups=c_in, norm=norm, activation=activation, bias=bias)]
        if se:
            modules.append(SqueezeExcite(c_in))
        modules.append(ConvNormAct(c_in, c_out, 1, norm=norm, activation=activation, bias=bias))
        super().__init__(*modules)


class ResidualBlock(nn.Module):
    """``activation(body(x) + shortcut(x))``. The shortcut is the identity unless the stride or the channel count
    changes; then it is a projection (1x1 conv with that stride, plus norm)."""

    def __init__(self, body: nn.Sequential, c_in: int, c_out: int, stride: int, norm: str, activation: str, se: bool,
                 dims: int = 2):
        super().__init__()
        self.body = nn.Sequential(*body, SqueezeExcite(c_out)) if se else body
        same = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if same else ConvNormAct(c_in, c_out, 1, stride, dims=dims, norm=norm, activation=None)
        self.act = layers.activation(activation)
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class BasicBlock(ResidualBlock):
    """ResNet-18/34 block: two 3x3 convs; the first carries the stride."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, norm: str = "batch", activation: str = "relu", se: bool = False):
        body = nn.Sequential(ConvNormAct(c_in, width, 3, stride, norm=norm, activation=activation),
                             ConvNormAct(width, width, 3, norm=norm, activation=None))
        super().__init__(body, c_in, width, stride, norm, activation, se)


class Bottleneck(ResidualBlock):
    """ResNet-50+ block: 1x1 reduce to ``width``, 3x3 (with the stride), 1x1 expand to ``4 * width``."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, norm: str = "batch", activation: str = "relu", se: bool = False):
        c_out = width * self.expansion
        body = nn.Sequential(ConvNormAct(c_in, width, 1, norm=norm, activation=activation),
                             ConvNormAct(width, width, 3, stride, norm=norm, activation=activation),
                             ConvNormAct(width, c_out, 1, norm=norm, activation=None))
        super().__init__(body, c_in, c_out, stride, norm, activation, se)


class CausalConv1d(nn.Conv1d):
    """Dilated 1-D conv padded on the left only, so output step t sees inputs t-(span-1) .. t and never the future."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(c_in, c_out, kernel_size, dilation=dilation, bias=bias)
        self.span = effective_kernel(kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.span - 1, 0)))


class TemporalBlock(ResidualBlock):
    """TCN block (Bai et al. 2018): two causal dilated convs, each followed by norm, activation and dropout."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float = 0.0, norm: str = "layer",
                 activation: str = "relu"):
        body: list[nn.Module] = []
        for width_in in (c_in, c_out):
            body += [CausalConv1d(width_in, c_out, kernel_size, dilation, bias=norm == "none"), layers.norm_seq(norm, c_out),
                     layers.activation(activation), nn.Dropout(dropout)]
        super().__init__(nn.Sequential(*body), c_in, c_out, 1, norm, activation, se=False, dims=1)


class PatchEmbedding(nn.Module):
    """ViT's tokeniser: a conv with kernel = stride = patch size projects each patch, then the map is flattened
    and transposed to ``(N, tokens, dim)``. 224x224x3 with 16x16 patches -> 196 tokens."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class GlobalAvgPool(nn.Module):
    """Mean over every spatial position: ``(N, C, ...)`` -> ``(N, C)``, whatever the map's rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)


def conv_stages(c_in: int, size: int, stages: Sequence[Sequence[int]], *, dims: int = 2, kernel_size: int = 3,
                norm: str = "batch", activation: str = "relu", se: bool = False) -> tuple[nn.Sequential, int]:
    """Plain/VGG layout: stages of same-resolution ``ConvNormAct`` units (optionally closed by SE), max-pooled
    by 2 between stages while the map is at least 2 wide. Returns the stack and its output channels."""
    modules: list[nn.Module] = []
    for i, stage in enumerate(stages):
        if i > 0 and size >= 2:
            modules.append(_POOLS[dims](2))
            size //= 2
        for c_out in stage:
            modules.append(ConvNormAct(c_in, c_out, kernel_size, dims=dims, norm=norm, activation=activation))
            c_in = c_out
        if se:
            modules.append(SqueezeExcite(c_in))
    return nn.Sequential(*modules), c_in
