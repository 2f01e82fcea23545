"""The tutorial's loss, in the tutorial's units.

Per batch of N images of D pixels:

    MSE  = sum((x_hat - x)^2) / (2N)                      (ReNom's mean_squared_error)
    KLD  = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) / N
    loss = MSE + KLD

`loss` is the negative ELBO per image of a decoder p(x|z) = N(x_hat, I) minus its constant
(D/2) log(2 pi): -ELBO = loss + (D/2) log(2 pi) nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """Per-image averages over a batch: total loss and its reconstruction and KL parts."""

    loss: torch.Tensor
    mse: torch.Tensor
    kld: torch.Tensor


def reconstruction_mse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum((recon - x)^2) / (2N): half the summed squared error per image."""
    return (recon - x).pow(2).sum() / (2 * x.shape[0])


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions, averaged over the batch."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / mu.shape[0]


def tutorial_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> LossTerms:
    """The tutorial's loss: MSE + KLD, both per image."""
    mse = reconstruction_mse(recon, x)
    kld = gaussian_kl(mu, logvar)
    return LossTerms(mse + kld, mse, kld)


def gaussian_constant(input_dim: int) -> float:
    """(D/2) log(2 pi): what turns the tutorial loss into the negative ELBO in nats."""
    return 0.5 * input_dim * math.log(2 * math.pi)
