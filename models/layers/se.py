"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507)."""
from __future__ import annotations

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> FC (reduce by rd_ratio) -> ReLU -> FC -> sigmoid -> rescale.

    1x1 convolutions stand in for the FC layers so the gate exports as plain Conv ops.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_divisor: int = 8):
        super().__init__()
        rd = make_divisible(channels * rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
