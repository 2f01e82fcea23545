"""The networks inside a VAE: the tutorial's MLP and a small conv net, and dtype helpers."""

from __future__ import annotations

import torch
from torch import nn

from vaelab.models.layers import gated_stack


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by a ReLU."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


def dense_stack(arch: str, sizes: list[int]) -> nn.Sequential:
    """The dense layers of `arch` between consecutive `sizes`: gated for 'gated', else ReLU."""
    return gated_stack(sizes) if arch == "gated" else mlp(sizes)


def padded_side(side: int) -> int:
    """`side` rounded up to a multiple of 4, the size two stride-2 convolutions halve twice."""
    return -(-side // 4) * 4


class PadTo(nn.Module):
    """Flat C*H*W images -> C x H' x W' maps, zero-padded at the bottom and right to H', W'."""

    def __init__(self, shape: tuple[int, int, int], padded: tuple[int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.padding = (0, padded[1] - shape[2], 0, padded[0] - shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = x.reshape(-1, *self.shape)
        return nn.functional.pad(maps, self.padding) if any(self.padding) else maps


class CropTo(nn.Module):
    """C x H' x W' maps -> the top-left C x H x W, flat: the exact inverse of `PadTo`'s padding."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        _, height, width = self.shape
        return maps[..., :height, :width].flatten(1)


def conv_encoder(shape: tuple[int, int, int], hidden: tuple[int, ...]) -> nn.Sequential:
    """Flat C x H x W images -> two stride-2 4x4 convolutions (each side padded up to a multiple
    of 4, then quartered) -> a dense layer."""
    channels, height, width = shape
    first, second, dense = hidden
    padded = (padded_side(height), padded_side(width))
    return nn.Sequential(
        PadTo(shape, padded),
        nn.Conv2d(channels, first, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(second * (padded[0] // 4) * (padded[1] // 4), dense),
        nn.ReLU(),
    )


def conv_decoder(
    shape: tuple[int, int, int], hidden: tuple[int, ...], latent_dim: int
) -> nn.Sequential:
    """The encoder mirrored up to the last layer: dense layers, then a stride-2 transposed conv."""
    _, height, width = shape
    first, second, dense = hidden
    quarter = (padded_side(height) // 4, padded_side(width) // 4)
    return nn.Sequential(
        nn.Linear(latent_dim, dense),
        nn.ReLU(),
        nn.Linear(dense, second * quarter[0] * quarter[1]),
        nn.ReLU(),
        nn.Unflatten(-1, (second, *quarter)),
        nn.ConvTranspose2d(second, first, 4, stride=2, padding=1),
        nn.ReLU(),
    )


def conv_output(shape: tuple[int, int, int], hidden: tuple[int, ...]) -> nn.Sequential:
    """The decoder's last transposed conv to C channels, cropped back to H x W, flat."""
    return nn.Sequential(
        nn.ConvTranspose2d(hidden[0], shape[0], 4, stride=2, padding=1), CropTo(shape)
    )


def as_input_of(layers: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the dtype of `layers`' weights (bf16 for a bf16 copy, unchanged for fp32)."""
    return tensor.to(next(layers.parameters()).dtype)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 values as fp32; fp32 and fp64 unchanged (a float64 model stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
