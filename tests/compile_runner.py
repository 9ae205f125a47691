"""A tiny module for the compiled-package tests (compiles in seconds, unlike the encoders), and a runner:

    python tests/compile_runner.py          compile_encoder() on the tiny module, in $SEC2SEC_CACHE; prints the status

Two of these at once are the concurrent first runs of tests/test_compiled.py.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from sec2sec.compiled import EncoderPlan, compile_encoder

ITEM_SHAPE = (3, 8, 8)


class Tiny(nn.Module):
    """(B, 3, 8, 8) -> (B, 4, 16): a convolution, a ReLU and the cells as tokens (an encoder in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).flatten(2)


def tiny_plan(seed: int = 0, name: str = "tiny") -> EncoderPlan:
    torch.manual_seed(seed)
    return EncoderPlan(name, Tiny().eval(), {"kind": "tiny"}, ITEM_SHAPE)


if __name__ == "__main__":
    print(compile_encoder(tiny_plan(), max_batch=4, show=False), flush=True)
    sys.exit(0)
