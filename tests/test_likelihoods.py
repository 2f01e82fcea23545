"""The decoder likelihoods (vaelab.models.likelihoods): normalised, stable, and the tutorial's loss
unchanged."""

import itertools
import math

import numpy as np
import pytest
import torch

from vaelab.models.likelihoods import (
    MIN_SCALE,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
    gaussian_constant,
    kl_weight,
    log_likelihood,
    negative_elbo,
    reconstruction_mse,
    tutorial_loss,
)

# lambda near 0.5 on purpose: 1 - 2 lambda cancels there in the textbook formula.
LAMBDAS = [1e-4, 0.01, 0.2, 0.49, 0.4999, 0.5 - 1e-7, 0.5, 0.5 + 1e-6, 0.5001, 0.7, 0.99, 0.9999]
GRID = np.linspace(0.0, 1.0, 200_001)


def _logit(lam: float) -> torch.Tensor:
    return torch.tensor([math.log(lam) - math.log1p(-lam)], dtype=torch.float64)


def _integral(values: np.ndarray) -> float:
    return float(np.trapezoid(values, GRID))


@pytest.mark.parametrize("lam", LAMBDAS)
def test_continuous_bernoulli_normaliser_matches_numeric_integration(lam):
    # C(lambda) = 1 / integral_0^1 lambda^x (1 - lambda)^(1 - x) dx
    numeric = -math.log(_integral(lam**GRID * (1 - lam) ** (1 - GRID)))
    assert continuous_bernoulli_log_norm(_logit(lam)).item() == pytest.approx(numeric, abs=1e-8)


@pytest.mark.parametrize("lam", [1e-3, 0.3, 0.5, 0.5 + 1e-5, 0.95])
def test_continuous_bernoulli_density_integrates_to_one_and_has_its_mean(lam):
    x = torch.tensor(GRID).unsqueeze(1)
    density = log_likelihood("continuous-bernoulli", _logit(lam), x).exp().numpy()
    assert _integral(density) == pytest.approx(1.0, abs=1e-8)
    mean = continuous_bernoulli_mean(_logit(lam)).item()
    assert mean == pytest.approx(_integral(GRID * density), abs=1e-8)


def test_continuous_bernoulli_is_smooth_and_finite_across_one_half_in_float32():
    grid = torch.linspace(-3.0, 3.0, 6001)  # includes 0 exactly and both sides of the series
    for function in (continuous_bernoulli_log_norm, continuous_bernoulli_mean):
        single = grid.clone().requires_grad_()
        double = grid.double().requires_grad_()
        values, reference = function(single), function(double)
        values.sum().backward()
        reference.sum().backward()
        assert torch.isfinite(single.grad).all()
        assert torch.allclose(values.double(), reference, atol=1e-6, rtol=0)
        assert torch.allclose(single.grad.double(), double.grad, atol=1e-5, rtol=0)
    # log C is even in l with curvature 1/6 at 0.
    near = torch.linspace(-0.01, 0.01, 201, dtype=torch.float64, requires_grad=True)
    continuous_bernoulli_log_norm(near).sum().backward()
    assert torch.allclose(near.grad, near.detach() / 6, atol=1e-7)
    big = torch.tensor([-80.0, 80.0])
    assert torch.allclose(continuous_bernoulli_log_norm(big), big.abs().log(), rtol=1e-6)


def test_gaussian_is_normal_with_learned_scale_bounded_below():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 5, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64)
    log_scale = torch.randn(5, dtype=torch.float64)
    scale = MIN_SCALE + log_scale.exp()
    expected = torch.distributions.Normal(torch.sigmoid(logits), scale).log_prob(x).sum(-1)
    per_pixel = log_likelihood("gaussian-per-pixel", logits, x, log_scale)
    assert torch.allclose(per_pixel, expected)
    shared = log_likelihood("gaussian", logits, x, log_scale[:1])
    expected = torch.distributions.Normal(torch.sigmoid(logits), scale[0]).log_prob(x).sum(-1)
    assert torch.allclose(shared, expected)
    collapsed = log_likelihood("gaussian", logits, x, torch.tensor([-1e4], dtype=torch.float64))
    assert torch.isfinite(collapsed).all()


def test_bernoulli_is_a_normalised_mass_function_on_binary_images():
    logits = torch.tensor([[1.5, -0.3, 4.0]], dtype=torch.float64)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    assert log_likelihood("bernoulli", logits, images).exp().sum().item() == pytest.approx(1.0)
    grey = torch.full((1, 3), 0.5, dtype=torch.float64)  # not normalised for grey values:
    assert log_likelihood("bernoulli", torch.zeros(1, 3), grey).item() == pytest.approx(
        3 * math.log(0.5)
    )


def test_tutorial_mse_is_the_unit_variance_gaussian_and_keeps_the_tutorial_loss():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 9, dtype=torch.float64), torch.rand(4, 9, dtype=torch.float64)
    mu, logvar = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    nll = -log_likelihood("tutorial-mse", logits, x).mean()
    recon = torch.sigmoid(logits)
    assert nll.item() == pytest.approx(
        reconstruction_mse(recon, x).item() + gaussian_constant(9), rel=1e-12
    )
    terms = negative_elbo("tutorial-mse", logits, x, mu, logvar)
    assert all(torch.equal(a, b) for a, b in zip(terms, tutorial_loss(recon, x, mu, logvar)))


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "gaussian"])
def test_training_loss_is_the_negative_log_likelihood_plus_weighted_kl(likelihood):
    torch.manual_seed(0)
    logits, x = torch.randn(4, 9, dtype=torch.float64), torch.rand(4, 9, dtype=torch.float64)
    mu, logvar = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    log_scale = torch.tensor([-1.0], dtype=torch.float64)
    terms = negative_elbo(likelihood, logits, x, mu, logvar, log_scale, kl_scale=0.25)
    nll = -log_likelihood(likelihood, logits, x, log_scale).mean()
    assert terms.reconstruction.item() == pytest.approx(nll.item())
    assert terms.loss.item() == pytest.approx(nll.item() + 0.25 * terms.kld.item())


def test_log_likelihood_broadcasts_over_leading_sample_axes():
    torch.manual_seed(0)
    logits, x = torch.randn(6, 3, 5), torch.rand(3, 5)
    batched = log_likelihood("continuous-bernoulli", logits, x)
    looped = torch.stack([log_likelihood("continuous-bernoulli", row, x) for row in logits])
    assert batched.shape == (6, 3) and torch.allclose(batched, looped)


def test_unknown_likelihood_and_missing_scale_are_refused():
    with pytest.raises(ValueError, match="unknown likelihood"):
        log_likelihood("poisson", torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="log-scale"):
        log_likelihood("gaussian", torch.zeros(1, 2), torch.zeros(1, 2))


def test_kl_weight_ramps_linearly_over_the_warmup_epochs():
    assert kl_weight(2.0, 0, 0, 100) == 2.0
    assert kl_weight(2.0, 2, 0, 100) == 0.0
    assert kl_weight(2.0, 2, 50, 100) == pytest.approx(0.5)
    assert kl_weight(2.0, 2, 100, 100) == pytest.approx(1.0)
    assert kl_weight(2.0, 2, 200, 100) == 2.0 and kl_weight(2.0, 2, 999, 100) == 2.0
