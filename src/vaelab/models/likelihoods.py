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

from vaelab.config import GAUSSIAN_LIKELIHOODS, LIKELIHOODS


class LossTerms(NamedTuple):
    """Per-image averages over a batch: total loss and its reconstruction and KL parts.

    `reconstruction` is the tutorial's MSE for 'tutorial-mse', else -log p(x|z) in nats.
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
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


# --- Likelihoods -----------------------------------------------------------------------------
# Each decoder emits one logit per pixel; the likelihood turns the logits into a density on
# pixel intensities x in [0, 1]. `log_likelihood` is the per-image log p(x|z) in nats with every
# constant included; evaluation and IWAE use it, and so does the training loss (except for
# 'tutorial-mse', whose training loss keeps the tutorial's units).

# Lower bound of a learned Gaussian scale: pixels that never vary (Fashion-MNIST's corners are
# always 0) would otherwise drive the scale, and the log-density, to infinity.
MIN_SCALE = 0.01
# |logit| under which the continuous Bernoulli uses series: there the closed forms cancel in fp32.
_CB_SERIES_BELOW = 0.1


def gaussian_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """The learned standard deviation, bounded below by MIN_SCALE and smooth everywhere."""
    return MIN_SCALE + log_scale.exp()


def continuous_bernoulli_log_partition(logits: torch.Tensor) -> torch.Tensor:
    """A(l) = log of the integral over [0, 1] of exp(l x) dx = log((e^l - 1) / l), elementwise.

    The continuous Bernoulli is the exponential family p(x|l) = exp(l x - A(l)) on [0, 1], with
    l = logit(lambda) the decoder's output. A(l) = max(l, 0) + log(1 - e^-abs(l)) - log(abs(l))
    never overflows; near l = 0, where it is 0 / 0 in disguise and its gradient cancels in fp32, the
    series l/2 + l^2/24 - l^4/2880 + l^6/181440 (error below 1e-15 for abs(l) < 0.1) is used.
    """
    small = logits.abs() < _CB_SERIES_BELOW
    safe = torch.where(small, 1.0, logits)
    size = safe.abs()
    result = torch.relu(safe) + torch.log(-torch.expm1(-size) / size)
    near = logits[small]  # few logits are this close to 0: the series runs on those alone
    s = near.square()
    return result.index_put_((small,), near / 2 + s * (1 / 24 + s * (-1 / 2880 + s / 181440)))


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of Loaiza-Ganem & Cunningham (2019), lambda = sigmoid(logits), elementwise.

    p(x|lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x) with C(lambda) = 2 artanh(1 - 2 lambda)
    / (1 - 2 lambda); in logits log C = softplus(l) - A(l), stable near lambda = 0.5 and at 0 and 1.
    """
    return torch.nn.functional.softplus(logits) - continuous_bernoulli_log_partition(logits)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] under the continuous Bernoulli, A'(l) = 1 / (1 - e^-l) - 1 / l, elementwise.

    Equal to lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)); for abs(l) < 1 the series
    1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600 (error below 3e-8) avoids the cancellation.
    """
    small = logits.abs() < 1.0
    safe = torch.where(small, 1.0, logits)
    exact = -1 / torch.expm1(-safe) - 1 / safe
    near = torch.where(small, logits, 0.0)
    s = near.square()
    series = 0.5 + near * (1 / 12 + s * (-1 / 720 + s * (1 / 30240 + s * (-1 / 1209600))))
    return torch.where(small, series, exact)


def decoder_mean(likelihood: str, logits: torch.Tensor) -> torch.Tensor:
    """The expected image under p(x|z): sigmoid(logits), except for the continuous Bernoulli."""
    if likelihood == "continuous-bernoulli":
        return continuous_bernoulli_mean(logits)
    return torch.sigmoid(logits)


def log_likelihood(
    likelihood: str,
    logits: torch.Tensor,
    x: torch.Tensor,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(x|z) per image (summed over the last axis), in nats with all constants.

    `logits` (..., D) broadcasts against `x` (..., D); `log_scale` is the Gaussian likelihoods'
    learned log-scale (1 or D values). 'bernoulli' is a proper density only for binary x: for grey
    values it is the cross-entropy most PyTorch examples train with, not a normalised density.
    """
    if likelihood == "tutorial-mse":
        return -0.5 * (x - torch.sigmoid(logits)).pow(2).sum(-1) - gaussian_constant(x.shape[-1])
    if likelihood in GAUSSIAN_LIKELIHOODS:
        if log_scale is None:
            raise ValueError(f"the {likelihood!r} likelihood needs its learned log-scale")
        scale = gaussian_scale(log_scale)
        z_score = (x - torch.sigmoid(logits)) / scale
        per_pixel = -0.5 * z_score.pow(2) - torch.log(scale) - 0.5 * math.log(2 * math.pi)
        return per_pixel.sum(-1)
    # Both are exponential families in the logit l: log p(x|z) = sum(x l) - sum(log-partition).
    if likelihood == "bernoulli":
        return (x * logits).sum(-1) - torch.nn.functional.softplus(logits).sum(-1)
    if likelihood == "continuous-bernoulli":
        return (x * logits).sum(-1) - continuous_bernoulli_log_partition(logits).sum(-1)
    raise ValueError(f"unknown likelihood {likelihood!r}; one of {', '.join(LIKELIHOODS)}")


def kl_weight(beta: float, warmup_epochs: int, step: int, steps_per_epoch: int) -> float:
    """The KL term's weight at optimizer step `step` (0-based): beta, ramped up linearly from 0
    over the first `warmup_epochs` epochs when that is above 0."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, step / (warmup_epochs * steps_per_epoch))


def negative_elbo(
    likelihood: str,
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_scale: torch.Tensor | None = None,
    kl_scale: float = 1.0,
) -> LossTerms:
    """Training loss per image: reconstruction + kl_scale * KL, with its two parts.

    The reconstruction part is -log p(x|z) in nats, except for 'tutorial-mse' where it is the
    tutorial's MSE (without the constant (D/2) log(2 pi)) so that its numbers stay the tutorial's.
    """
    if likelihood == "tutorial-mse":
        reconstruction = reconstruction_mse(torch.sigmoid(logits), x)
    else:
        reconstruction = -log_likelihood(likelihood, logits, x, log_scale).mean()
    kld = gaussian_kl(mu, logvar)
    return LossTerms(reconstruction + kl_scale * kld, reconstruction, kld)
