"""The bounds a VAE is trained and evaluated on, from the log-densities of sampled latents.

For S samples z_s ~ q(z|x) of each image, log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x):

    ELBO = mean_s log w_s
    IWAE = log (1/S) sum_s w_s                        (Burda et al. 2015; S = 1 gives the ELBO)

The IWAE bound's gradient is taken through log-sum-exp, so each sample's gradient is weighted by
its normalised importance weight w_s / sum w, which autograd treats as it should: the weights are
differentiated, never held fixed, and no closed-form KL is put inside them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vaelab.models.likelihoods import LossTerms, gaussian_constant


class ImportanceTerms(NamedTuple):
    """Per-sample log-densities, each (S, N): log p(x|z), log p(z) and log q(z|x) (for a
    hierarchical model p(z) and q(z|x) are over all of its latent layers)."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor

    def log_weights(self) -> torch.Tensor:
        """log w = log p(x|z) + log p(z) - log q(z|x), (S, N)."""
        return self.log_px_z + self.log_pz - self.log_qz


LOG_2PI = math.log(2 * math.pi)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last axis."""
    return (-0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)).sum(-1)


def log_posterior_of_noise(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) of z = mu + eps * std, from eps directly (no cancellation in (z - mu) / std)."""
    return log_standard_normal(eps) - 0.5 * logvar.sum(-1)


def sampled_bound(
    likelihood: str,
    terms: ImportanceTerms,
    input_dim: int,
    kl_scale: float = 1.0,
    objective: str = "elbo",
) -> LossTerms:
    """The training loss per image from S samples: -ELBO or -IWAE, KL weighted by `kl_scale`.

    `reconstruction` is E_s[-log p(x|z_s)] and `kld` the Monte Carlo KL E_s[log q - log p]. For
    'tutorial-mse' both the loss and the reconstruction leave out the constant (D/2) log(2 pi),
    so that they stay in the tutorial's units.
    """
    ratio = terms.log_pz - terms.log_qz
    log_w = terms.log_px_z + kl_scale * ratio
    if objective == "iwae":
        samples = log_w.shape[0]
        loss = -(torch.logsumexp(log_w, dim=0) - math.log(samples)).mean()
    else:
        loss = -log_w.mean()
    reconstruction = -terms.log_px_z.mean()
    if likelihood == "tutorial-mse":
        constant = gaussian_constant(input_dim)
        loss, reconstruction = loss - constant, reconstruction - constant
    return LossTerms(loss, reconstruction, -ratio.mean())
