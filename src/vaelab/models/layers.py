"""Gated layers, h * sigmoid(g) (Dauphin et al. 2017), the blocks of the VampPrior paper's
networks, and the initialisation those networks use."""

from __future__ import annotations

import math

import torch
from torch import nn


class GatedDense(nn.Module):
    """A dense layer whose output is gated: (W x + b) * sigmoid(V x + c)."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.h = nn.Linear(width_in, width_out)
        self.g = nn.Linear(width_in, width_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(nn.Module):
    """A convolution whose output maps are gated: conv_h(x) * sigmoid(conv_g(x))."""

    def __init__(
        self, channels_in: int, channels_out: int, kernel: int, stride: int, padding: int
    ) -> None:
        super().__init__()
        self.h = nn.Conv2d(channels_in, channels_out, kernel, stride, padding)
        self.g = nn.Conv2d(channels_in, channels_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class LogVarianceHead(nn.Module):
    """A linear log-variance head bounded to [-6, 2] (hardtanh), as the VampPrior paper's."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.hardtanh(self.linear(x), -6.0, 2.0)


def he_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Every Linear weight of `module` drawn from N(0, 2 / fan_in) (He et al. 2015), biases kept."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            with torch.no_grad():
                layer.weight.normal_(0.0, math.sqrt(2.0 / layer.in_features), generator=generator)


def gated_stack(sizes: list[int]) -> nn.Sequential:
    """Gated dense layers between consecutive `sizes`."""
    return nn.Sequential(*(GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
