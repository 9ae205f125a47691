"""Clip summary -> named outputs: one logit per output; sigmoid gives a probability (binary task) or a
score in [0, 1] (regression task, e.g. the five First Impressions traits)."""

from __future__ import annotations

import torch
from torch import nn

from sec2sec.config import HeadsConfig


class Heads(nn.Module):
    """(B, in_width) summary -> (B, n_outputs) logits, in the order of `config.outputs`."""

    def __init__(self, in_width: int, config: HeadsConfig) -> None:
        super().__init__()
        self.names = tuple(config.outputs)
        self.linear = nn.Linear(in_width, len(self.names))

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return self.linear(summary)

    def named(self, logits: torch.Tensor) -> dict[str, float]:
        """(n_outputs,) logits of one item -> {name: sigmoid value}."""
        values = torch.sigmoid(logits.float()).tolist()
        return dict(zip(self.names, values, strict=True))
