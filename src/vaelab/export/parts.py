"""The two halves of a VAE that leave vaelab, as small modules with a fixed contract.

The encoder takes a batch of flat images x (N, D), D = C*H*W in channel-major order (all of
channel 0 row by row, then channel 1, ...), floats in [0, 1], and returns the posterior's mean
mu and log-variance logvar, each (N, latent_dim). The decoder takes latent codes z
(N, latent_dim) and returns x_mean (N, D), the expected image under p(x|z) (`VAE.decode`),
intensities in (0, 1) whatever the likelihood. N, the batch size, is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vaelab.errors import VaelabError
from vaelab.models import VAE

PARTS = ("encoder", "decoder")
PART_CHOICES = (*PARTS, "both")
BATCH = "batch"  # the name of the free batch dimension in the exported files and their record


class Encoder(nn.Module):
    """x (N, D) -> (mu, logvar), each (N, latent_dim): `VAE.encode`."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        return self.model.encode(x)


class Decoder(nn.Module):
    """z (N, latent_dim) -> x_mean (N, D): `VAE.decode`, the expected image."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The expected image under p(x|z) for latent codes `z`."""
        return self.model.decode(z)


@dataclass(frozen=True)
class Tensor:
    """One input or output of an exported part: its name and its shape, 'batch' first."""

    name: str
    width: int

    @property
    def shape(self) -> list[str | int]:
        """[BATCH, width]: the batch size is free, the width fixed."""
        return [BATCH, self.width]


@dataclass(frozen=True)
class Part:
    """One exported part: the module to export, its inputs and outputs, and how to draw inputs."""

    name: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """A random input batch: images uniform in [0, 1], or codes 3 * N(0, I) (past the
        prior's usual range, so the check also covers the decoder's saturated regions)."""
        width = self.inputs[0].width
        if self.name == "encoder":
            return torch.rand(batch, width, generator=generator)
        return 3 * torch.randn(batch, width, generator=generator)

    def record(self) -> dict[str, list[dict[str, object]]]:
        """The names and shapes of the inputs and outputs, for the JSON beside the files."""
        return {
            "inputs": [_tensor_record(t) for t in self.inputs],
            "outputs": [_tensor_record(t) for t in self.outputs],
        }


def _tensor_record(tensor: Tensor) -> dict[str, object]:
    return {"name": tensor.name, "shape": tensor.shape, "dtype": "float32"}


def make_part(model: VAE, name: str) -> Part:
    """The `name` part ('encoder' or 'decoder') of `model`, with its contract."""
    pixels, latent = model.config.input_dim, model.config.latent_dim
    if name == "encoder":
        return Part(
            name, Encoder(model).eval(), (Tensor("x", pixels),),
            (Tensor("mu", latent), Tensor("logvar", latent)),
        )  # fmt: skip
    if name == "decoder":
        return Part(
            name, Decoder(model).eval(), (Tensor("z", latent),), (Tensor("x_mean", pixels),)
        )
    raise _unknown_part(name)


def parts_named(part: str) -> tuple[str, ...]:
    """The parts `part` stands for: ('encoder',), ('decoder',) or both."""
    if part == "both":
        return PARTS
    if part in PARTS:
        return (part,)
    raise _unknown_part(part)


def _unknown_part(part: str) -> VaelabError:
    return VaelabError(
        f"part must be one of {', '.join(PART_CHOICES)}, got {part!r}", parameters=("part",)
    )
