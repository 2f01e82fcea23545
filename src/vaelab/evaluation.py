"""Test-set metrics of a model in the tutorial's units."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelab.losses import gaussian_constant, tutorial_loss
from vaelab.models import VAE

EVAL_SEED = 12345


@dataclass(frozen=True)
class Metrics:
    """Per-image means over a split: the tutorial's loss and its MSE and KLD parts."""

    loss: float
    mse: float
    kld: float
    images: int

    def negative_elbo_nats(self, input_dim: int) -> float:
        """The same loss with the Gaussian decoder's constant (D/2) log(2 pi) included."""
        return self.loss + gaussian_constant(input_dim)


@torch.no_grad()
def evaluate(
    model: VAE, images: torch.Tensor, batch_size: int = 1000, seed: int = EVAL_SEED
) -> Metrics:
    """Mean loss over `images` in batches, sampling z as in training from a fixed seed.

    The fixed seed makes the number repeatable and lets epochs be compared on the same noise.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        recon, mu, logvar = model(batch, generator)
        terms = tutorial_loss(recon, batch, mu, logvar)
        totals += torch.stack(terms).double() * len(batch)
    model.train(was_training)
    loss, mse, kld = (totals / max(len(images), 1)).tolist()
    return Metrics(loss=loss, mse=mse, kld=kld, images=len(images))
