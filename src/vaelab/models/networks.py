"""The networks inside a VAE: the tutorial's MLP and a small conv net (laid out for the CPU's
convolutions), and dtype helpers."""

from __future__ import annotations

from typing import cast

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


# The conv VAE's maps are channels-last (N, H, W, C in memory) between its layers on the CPU:
# oneDNN's convolutions read and write that layout as it is, where NCHW maps are reordered to it
# and back around every convolution. `contiguous_format` gives the plain NCHW layers (the same
# values, to rounding). Maps on other devices stay as they come: measured on CPUs only.
CONV_MEMORY_FORMAT = torch.channels_last


def in_conv_layout(maps: torch.Tensor) -> torch.Tensor:
    """`maps` (N, C, H, W) laid out as CONV_MEMORY_FORMAT on the CPU, copied unless they are.

    One-channel maps count as contiguous in both layouts, and a convolution then writes NCHW;
    the copy gives them the channel stride 1 that makes it write channels-last.
    """
    if maps.device.type != "cpu" or CONV_MEMORY_FORMAT is torch.contiguous_format:
        return maps
    if maps.stride(1) == 1 and maps.is_contiguous(memory_format=CONV_MEMORY_FORMAT):
        return maps
    return torch.empty_like(maps, memory_format=CONV_MEMORY_FORMAT).copy_(maps)


class PadTo(nn.Module):
    """Flat C*H*W images -> C x H' x W' maps, zero-padded at the bottom and right to H', W'.

    `conv_layout` lays the maps out as the conv VAE's layers keep them (CONV_MEMORY_FORMAT).
    """

    def __init__(
        self, shape: tuple[int, int, int], padded: tuple[int, int], conv_layout: bool = False
    ) -> None:
        super().__init__()
        self.shape = shape
        self.padding = (0, padded[1] - shape[2], 0, padded[0] - shape[1])
        self.conv_layout = conv_layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = x.reshape(-1, *self.shape)
        maps = nn.functional.pad(maps, self.padding) if any(self.padding) else maps
        return in_conv_layout(maps) if self.conv_layout else maps


class UnflattenMaps(nn.Unflatten):
    """Flat C*H*W values -> C x H x W maps, laid out as the conv VAE's layers keep them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_conv_layout(super().forward(x))


class CropTo(nn.Module):
    """C x H' x W' maps -> the top-left C x H x W, flat: the exact inverse of `PadTo`'s padding."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        _, height, width = self.shape
        return maps[..., :height, :width].flatten(1)


class ConvTranspose2dThenBias(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` (the same parameters and initialisation) that adds its bias after the
    convolution instead of inside it.

    The values are the same, to rounding; the bias's gradient becomes a sum over the output maps,
    where oneDNN's bf16 backward pass of a transposed convolution with a bias takes about twice
    as long as without.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """The transposed convolution of `x`, then its bias added."""
        if output_size is not None:
            raise ValueError("output_size is not supported here")
        maps = self.unbiased(x)
        return maps if self.bias is None else maps + self.bias.to(maps.dtype)[:, None, None]

    def unbiased(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution of `x` without the bias."""
        padding = cast(tuple[int, int], self.padding)  # never a string for transposed convolutions
        return nn.functional.conv_transpose2d(
            x, self.weight, None, self.stride, padding, self.output_padding, self.groups,
            self.dilation,
        )  # fmt: skip


# A 4x4 stride-2 transposed convolution with padding 1 in sub-pixel form: output row 2i + a
# sums input rows i - 1, i and i + 1 through kernel rows SUBPIXEL_TAPS[3a : 3a + 3], where
# kernel row 4 is a row of zeros (a = 0 never reads row i + 1, a = 1 never row i - 1); the
# same for the columns.
SUBPIXEL_TAPS = [3, 1, 4, 4, 2, 0]


class SubPixelConvTranspose2d(ConvTranspose2dThenBias):
    """A 4x4 stride-2 transposed convolution with padding 1 (an `nn.ConvTranspose2d`'s
    parameters and initialisation), computed as a 3x3 stride-1 convolution to 4 maps per
    output channel, one for each position (a, b) in a 2x2 block, shuffled into place.

    Each output value sums the same products as the transposed convolution. oneDNN's transposed
    convolution to few channels (the decoder's last layer, to the image's channels) is about 3x
    slower than this convolution, in bf16 and fp32; to many channels the 3x3 window's 2.25x
    products cost more than they save.
    """

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(channels_in, channels_out, 4, stride=2, padding=1)

    def unbiased(self, x: torch.Tensor) -> torch.Tensor:
        channels_in, channels = self.weight.shape[:2]
        kernel = nn.functional.pad(self.weight, (0, 1, 0, 1))  # row and column 4: zeros
        windows = kernel[:, :, SUBPIXEL_TAPS][:, :, :, SUBPIXEL_TAPS]
        # (in, out, a, 3 rows, b, 3 columns) -> (out, a, b, in, 3, 3): output channel c, a, b
        windows = windows.view(channels_in, channels, 2, 3, 2, 3).permute(1, 2, 4, 0, 3, 5)
        blocks = nn.functional.conv2d(x, windows.reshape(-1, channels_in, 3, 3), padding=1)
        # pixel_shuffle(blocks, 2) to NCHW maps, written out: torch's is slower on channels-last
        n, _, height, width = blocks.shape
        blocks = blocks.unflatten(1, (channels, 2, 2)).permute(0, 1, 4, 2, 5, 3)  # n c i a j b
        return blocks.reshape(n, channels, 2 * height, 2 * width)


def conv_encoder(shape: tuple[int, int, int], hidden: tuple[int, ...]) -> nn.Sequential:
    """Flat C x H x W images -> two stride-2 4x4 convolutions (each side padded up to a multiple
    of 4, then quartered) -> a dense layer."""
    channels, height, width = shape
    first, second, dense = hidden
    padded = (padded_side(height), padded_side(width))
    return nn.Sequential(
        PadTo(shape, padded, conv_layout=True),
        nn.Conv2d(channels, first, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 4, stride=2, padding=1),
        nn.Flatten(),  # then the ReLU, on the flat copy: its gradient comes back in its layout
        nn.ReLU(),
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
        UnflattenMaps(-1, (second, *quarter)),
        ConvTranspose2dThenBias(second, first, 4, stride=2, padding=1),
        nn.ReLU(),
    )


def conv_output(shape: tuple[int, int, int], hidden: tuple[int, ...]) -> nn.Sequential:
    """The decoder's last transposed conv to C channels, cropped back to H x W, flat."""
    return nn.Sequential(SubPixelConvTranspose2d(hidden[0], shape[0]), CropTo(shape))


def as_input_of(layers: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the dtype of `layers`' weights (bf16 for a bf16 copy, unchanged for fp32)."""
    return tensor.to(next(layers.parameters()).dtype)


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 values as fp32; fp32 and fp64 unchanged (a float64 model stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
