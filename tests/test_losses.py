import math

import numpy as np
import torch

from vaelab.models.likelihoods import (
    gaussian_constant,
    gaussian_kl,
    reconstruction_mse,
    tutorial_loss,
)


def test_loss_matches_hand_computation():
    recon = torch.tensor([[0.5, 0.25], [1.0, 0.0], [0.2, 0.4]])
    x = torch.tensor([[0.0, 0.25], [0.5, 0.5], [0.2, 0.0]])
    mu = torch.tensor([[1.0], [0.0], [-2.0]])
    logvar = torch.tensor([[0.0], [math.log(2.0)], [0.0]])
    # squared errors: 0.25 + 0; 0.25 + 0.25; 0 + 0.16 -> 0.91, over 2N = 6
    expected_mse = 0.91 / 6
    # per image: -0.5 * (1 + logvar - mu^2 - var)
    kl = [-0.5 * (1 + 0 - 1 - 1), -0.5 * (1 + math.log(2) - 0 - 2), -0.5 * (1 + 0 - 4 - 1)]
    expected_kld = sum(kl) / 3
    terms = tutorial_loss(recon, x, mu, logvar)
    assert math.isclose(terms.reconstruction.item(), expected_mse, rel_tol=1e-6)
    assert math.isclose(terms.kld.item(), expected_kld, rel_tol=1e-6)
    assert math.isclose(terms.loss.item(), expected_mse + expected_kld, rel_tol=1e-6)


def test_mse_is_renom_mean_squared_error():
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 5)), rng.random((7, 5))
    renom_style = np.sum((a - b) ** 2) / (2 * a.shape[0])
    assert math.isclose(reconstruction_mse(torch.tensor(a), torch.tensor(b)).item(), renom_style)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.tensor([[0.7, -1.2, 0.1]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.8, 0.0]], dtype=torch.float64)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(400_000, 3, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    monte_carlo = (log_q - log_p).mean().item()
    assert abs(gaussian_kl(mu, logvar).item() - monte_carlo) < 0.01


def test_loss_plus_constant_is_gaussian_negative_log_likelihood():
    torch.manual_seed(0)
    recon, x = torch.rand(4, 9, dtype=torch.float64), torch.rand(4, 9, dtype=torch.float64)
    nll = -torch.distributions.Normal(recon, 1.0).log_prob(x).sum(1).mean().item()
    assert math.isclose(
        reconstruction_mse(recon, x).item() + gaussian_constant(9), nll, rel_tol=1e-9
    )
