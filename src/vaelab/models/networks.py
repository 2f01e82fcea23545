"""The networks inside a VAE: the tutorial's MLP and a small conv net, and dtype helpers."""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by a ReLU."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


def conv_encoder(side: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """Flat images -> two stride-2 4x4 convolutions (side -> side/4) -> a dense layer."""
    first, second, dense = hidden
    return nn.Sequential(
        nn.Unflatten(-1, (1, side, side)),
        nn.Conv2d(1, first, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(second * (side // 4) ** 2, dense),
        nn.ReLU(),
    )


def conv_decoder(side: int, hidden: tuple[int, ...], latent_dim: int) -> nn.Sequential:
    """The encoder mirrored up to the last layer: dense layers, then a stride-2 transposed conv."""
    first, second, dense = hidden
    quarter = side // 4
    return nn.Sequential(
        nn.Linear(latent_dim, dense),
        nn.ReLU(),
        nn.Linear(dense, second * quarter * quarter),
        nn.ReLU(),
        nn.Unflatten(-1, (second, quarter, quarter)),
        nn.ConvTranspose2d(second, first, 4, stride=2, padding=1),
        nn.ReLU(),
    )


def as_input_of(layers: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the dtype of `layers`' weights (bf16 for a bf16 copy, unchanged for fp32)."""
    return tensor.to(next(layers.parameters()).dtype)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 values as fp32; fp32 and fp64 unchanged (a float64 model stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
