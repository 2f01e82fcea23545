"""The tutorial's MLP variational auto-encoder as a plain `nn.Module`."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vaelab.config import ModelConfig


class VAEOutput(NamedTuple):
    """What a forward pass returns: the reconstruction and the posterior's parameters."""

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each followed by a ReLU."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder D-400-200-100-20 with mu and log-variance heads; decoder latent-20-100-200-400-D.

    Hidden sizes and latent size come from `ModelConfig`; the defaults are the tutorial's.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        hidden = list(self.config.hidden)
        self.encoder = mlp([self.config.input_dim, *hidden])
        self.mu_head = nn.Linear(hidden[-1], self.config.latent_dim)
        self.logvar_head = nn.Linear(hidden[-1], self.config.latent_dim)
        self.decoder = mlp([self.config.latent_dim, *reversed(hidden)])
        self.output = nn.Linear(hidden[0], self.config.input_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h)

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I)."""
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + eps * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel intensities in (0, 1) for latent codes `z`."""
        return torch.sigmoid(self.output(self.decoder(z)))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return VAEOutput(self.decode(z), mu, logvar)
