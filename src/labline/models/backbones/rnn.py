"""Recurrent backbones: GRU or LSTM over the time steps; the features are the last layer's final hidden state.

On an image the rows are the time steps (see ``shapes``). Bidirectional
runs concatenate the forward state after the last step with the backward
state after the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from labline.core.errors import ConfigError
from labline.models import layers
from labline.models.backbones.shapes import as_sequence, sequence_shape

CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLS = ("last", "mean")


class RNN(nn.Module):
    """``cell`` chooses GRU or LSTM; ``dropout`` acts between stacked layers and on the output features."""

    def __init__(self, in_shape: Sequence[int], cell: str = "gru", hidden_size: int = 64, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.1, norm: str = "none", pool: str = "last"):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError("backbone.cell", f"unknown cell '{cell}'", CELLS)
        if pool not in POOLS:
            raise ConfigError("backbone.pool", f"unknown pooling '{pool}'", POOLS)
        self.pool = pool
        _, features = sequence_shape(in_shape, cell)
        layers.positive_int(hidden_size, "backbone.hidden_size")
        layers.positive_int(num_layers, "backbone.num_layers")
        layers.check_dropout(dropout)
        self.rnn = CELLS[cell](features, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.directions
        self.norm = layers.norm1d(norm, self.out_features)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, state = self.rnn(as_sequence(x))
        if self.pool == "mean":
            return self.drop(self.norm(outputs.mean(dim=1)))
        hidden = state[0] if isinstance(state, tuple) else state
        last = hidden.view(self.rnn.num_layers, self.directions, len(x), -1)[-1]
        return self.drop(self.norm(last.transpose(0, 1).reshape(len(x), -1)))
