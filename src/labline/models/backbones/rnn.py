"""Recurrent backbones: GRU or LSTM over the time steps; the features are the last layer's final hidden state.

On an image the rows are the time steps (see ``shapes``); ``frame`` stacks
consecutive steps into one recurrent step (``frame_length``). Bidirectional
runs concatenate the forward state after the last step with the backward
state after the first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import as_sequence, sequence_shape

CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLS = ("last", "mean")
# ``frame: auto`` leaves sequences up to this many steps as they are
AUTO_STEPS = 16


def frame_length(frame: int | str, steps: int) -> int:
    """Steps stacked into one recurrent step. ``auto`` keeps short sequences (images read by rows) step by step
    and cuts a longer one into frames of about sqrt(steps) values (frame stacking, as low-frame-rate acoustic
    models do): the gradient then crosses sqrt(steps) recurrent steps instead of ``steps``. On digits_seq (64
    steps) the GRU's defaults reach 0.778 step by step, 0.950 in frames of 4 and 0.969 in frames of 8 (the auto
    choice; docs/own_data.md)."""
    if frame == "auto":
        return 1 if steps <= AUTO_STEPS else math.ceil(math.sqrt(steps))
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
        raise ConfigError("backbone.frame", f"must be 'auto' or a positive number of steps, got {frame!r}", "auto, 1, 4, 8")
    return frame


class RNN(nn.Module):
    """``cell`` chooses GRU or LSTM; ``dropout`` acts between stacked layers and on the output features."""

    def __init__(self, in_shape: Sequence[int], cell: str = "gru", hidden_size: int = 64, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.1, norm: str = "none", pool: str = "last",
                 frame: int | str = 1):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError("backbone.cell", f"unknown cell '{cell}'", CELLS)
        if pool not in POOLS:
            raise ConfigError("backbone.pool", f"unknown pooling '{pool}'", POOLS)
        self.pool = pool
        steps, features = sequence_shape(in_shape, cell)
        self.frame = frame_length(frame, steps)
        features *= self.frame
        layers.positive_int(hidden_size, "backbone.hidden_size")
        layers.positive_int(num_layers, "backbone.num_layers")
        layers.check_dropout(dropout)
        self.rnn = CELLS[cell](features, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.directions
        self.norm = layers.norm1d(norm, self.out_features)
        self.drop = nn.Dropout(dropout)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, steps, F)`` -> ``(N, ceil(steps / frame), frame * F)``, zeros padded before the first step so the
        last frame ends on the last step."""
        seq = as_sequence(x)
        if self.frame == 1:
            return seq
        pad = -seq.shape[1] % self.frame
        seq = nn.functional.pad(seq, (0, 0, pad, 0))
        return seq.reshape(len(seq), -1, self.frame * seq.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, state = self.rnn(self.frames(x))
        if self.pool == "mean":
            return self.drop(self.norm(outputs.mean(dim=1)))
        hidden = state[0] if isinstance(state, tuple) else state
        last = hidden.view(self.rnn.num_layers, self.directions, len(x), -1)[-1]
        return self.drop(self.norm(last.transpose(0, 1).reshape(len(x), -1)))
