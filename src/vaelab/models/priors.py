"""Priors p(z): the standard normal, the VampPrior and a mixture of Gaussians.

The VampPrior (Tomczak & Welling 2018) is the mixture of the encoder's posteriors at K learned
pseudo-inputs u_k: p(z) = (1/K) sum_k q(z|u_k). As in the paper, u_k = sigmoid(w_k) with w_k
drawn from N(-0.05, 0.01^2), so every pseudo-input starts as a near-uniform grey image in (0, 1).
The mixture of Gaussians has K learned means (from N(0, I)) and log-variances (from 0).
Neither has a closed-form KL to a Gaussian posterior: the loss estimates it from the sample.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from vaelab.models.bounds import LOG_2PI, log_standard_normal

# The encoder's q(z|x) as (mean, log-variance): what the VampPrior evaluates at its pseudo-inputs.
Posterior = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = -0.05, 0.01


class Prior(nn.Module):
    """A prior p(z): its log-density and samples; `posterior` is the model's q(z|x), which the
    VampPrior's components come from."""

    closed_form_kl = False

    def log_prob(self, z: torch.Tensor, posterior: Posterior) -> torch.Tensor:
        """log p(z), summed over the last axis."""
        raise NotImplementedError

    def sample(
        self, n: int, latent_dim: int, generator: torch.Generator, posterior: Posterior
    ) -> torch.Tensor:
        """`n` codes z ~ p(z) on the generator's device."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I): the KL to a Gaussian posterior has a closed form."""

    closed_form_kl = True

    def log_prob(self, z: torch.Tensor, posterior: Posterior) -> torch.Tensor:
        """log p(z), summed over the last axis."""
        return log_standard_normal(z)

    def sample(
        self, n: int, latent_dim: int, generator: torch.Generator, posterior: Posterior
    ) -> torch.Tensor:
        """`n` codes z ~ p(z), float32 on the generator's device."""
        return torch.randn(n, latent_dim, generator=generator, device=generator.device)


class MixturePrior(Prior):
    """A uniform mixture of K diagonal Gaussians; its components come from `components`."""

    def __init__(self) -> None:
        super().__init__()
        self.held: tuple[torch.Tensor, torch.Tensor] | None = None

    def components(self, posterior: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-variances of the K components, each (K, latent_dim), as `held`
        holds them while the weights stay fixed."""
        return self.held if self.held is not None else self.computed_components(posterior)

    def computed_components(self, posterior: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        """The components computed from the current weights."""
        raise NotImplementedError

    @contextmanager
    def holding_components(self, posterior: Posterior) -> Iterator[None]:
        """The components computed once and reused until the block ends (for evaluation, where
        the VampPrior would otherwise encode its pseudo-inputs again for every chunk)."""
        with torch.no_grad():
            self.held = self.computed_components(posterior)
        try:
            yield
        finally:
            self.held = None

    def log_prob(self, z: torch.Tensor, posterior: Posterior) -> torch.Tensor:
        """log p(z) = logsumexp_k log N(z; m_k, v_k) - log K, summed over the last axis.

        The squared distances are expanded into matrix products, (z^2) v^-1 - 2 z (m / v) +
        m^2 / v, so that a batch of S x N codes never makes an (S, N, K, latent_dim) tensor.
        """
        means, logvars = self.components(posterior)
        means, logvars = means.to(z.dtype), logvars.to(z.dtype)
        precision = torch.exp(-logvars)
        flat = z.reshape(-1, z.shape[-1])
        squared = (
            flat.pow(2) @ precision.T
            - 2 * flat @ (means * precision).T
            + (means.pow(2) * precision).sum(-1)
        )
        per_component = -0.5 * (squared + logvars.sum(-1) + z.shape[-1] * LOG_2PI)
        log_p = torch.logsumexp(per_component, dim=-1) - math.log(len(means))
        return log_p.reshape(z.shape[:-1])

    def sample(
        self, n: int, latent_dim: int, generator: torch.Generator, posterior: Posterior
    ) -> torch.Tensor:
        """`n` codes: a component drawn uniformly for each, then z from that Gaussian."""
        means, logvars = self.components(posterior)
        device = generator.device
        chosen = torch.randint(len(means), (n,), generator=generator, device=device)
        eps = torch.randn(n, latent_dim, generator=generator, device=device)
        mean, logvar = means.to(device)[chosen], logvars.to(device)[chosen]
        return (mean + eps * torch.exp(0.5 * logvar)).float()


class VampPrior(MixturePrior):
    """The VampPrior: the encoder's posteriors at `count` learned pseudo-inputs."""

    def __init__(self, count: int, input_dim: int) -> None:
        super().__init__()
        self.pseudo_logits = nn.Parameter(
            torch.empty(count, input_dim).normal_(PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD)
        )

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_k = sigmoid(w_k), images with values in (0, 1), (K, input_dim)."""
        return torch.sigmoid(self.pseudo_logits)

    def computed_components(self, posterior: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        return posterior(self.pseudo_inputs())


class GaussianMixturePrior(MixturePrior):
    """A uniform mixture of `count` learned diagonal Gaussians in the latent space."""

    def __init__(self, count: int, latent_dim: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(count, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(count, latent_dim))

    def computed_components(self, posterior: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        return self.means, self.logvars


def held_prior(prior: Prior, posterior: Posterior) -> contextlib.AbstractContextManager[None]:
    """A block in which a mixture prior's components are computed once (no-op otherwise)."""
    if isinstance(prior, MixturePrior):
        return prior.holding_components(posterior)
    return nullcontext()


def make_prior(name: str, count: int, input_dim: int, latent_dim: int) -> Prior:
    """The prior named `name` ('gaussian', 'vamp' or 'mog')."""
    if name == "vamp":
        return VampPrior(count, input_dim)
    if name == "mog":
        return GaussianMixturePrior(count, latent_dim)
    return StandardNormalPrior()
