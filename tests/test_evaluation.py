"""The negative ELBO and the IWAE estimate of -log p(x), checked against dense quadrature."""

import json
import math

import pytest
import torch

from tests.helpers import fit_in_quarters, synthetic_images
from vaelab.config import ModelConfig
from vaelab.data import to_unit_float
from vaelab.errors import VaelabError
from vaelab.evaluation import (
    EVAL_FILE,
    estimate,
    evaluate,
    evaluate_likelihood,
    importance_weighted,
    parse_size,
    plan_chunks,
    save_eval,
)
from vaelab.models import VAE
from vaelab.models.likelihoods import tutorial_loss

EVAL_KEYS = {
    "likelihood", "images", "negative_elbo_nats", "reconstruction_nats", "kl_nats",
    "iw_samples", "iwae_nll_nats", "iwae_stderr_nats", "seed", "seconds", "conditional",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(count: int = 256) -> torch.Tensor:
    return to_unit_float(synthetic_images(count, seed=1)[0]).double()


def trained(likelihood: str, arch: str = "mlp", steps: int = 300) -> VAE:
    """A small float64 VAE with a 2-D latent fitted to 4x4 images, so q(z|x) means something."""
    hidden = (8, 16, 32) if arch == "conv" else (32, 16)
    torch.manual_seed(0)
    config = ModelConfig(16, hidden, latent_dim=2, arch=arch, likelihood=likelihood)
    return fit_in_quarters(VAE(config).double(), images(), steps)


@torch.no_grad()
def quadrature_nll(
    model: VAE, x: torch.Tensor, span: float = 7.0, points: int = 561
) -> torch.Tensor:
    """-log p(x) = -log sum_grid p(x|z) p(z) dz over a fine grid of the latent plane.

    The grid covers the prior out to 7 standard deviations; its spacing (0.025) is far below the
    posterior widths of these models (about 0.4), where a Riemann sum of a smooth density is exact
    to many digits.
    """
    axis = torch.linspace(-span, span, points, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)
    logits = model.decode_logits(z)
    log_prior = -0.5 * z.pow(2).sum(-1) - math.log(2 * math.pi)
    cell = 2 * math.log(axis[1] - axis[0])
    return torch.stack(
        [-(torch.logsumexp(model.log_likelihood(xi, logits) + log_prior, 0) + cell) for xi in x]
    )


@pytest.mark.parametrize(
    ("likelihood", "arch"),
    [("bernoulli", "mlp"), ("continuous-bernoulli", "mlp"), ("tutorial-mse", "mlp"),
     pytest.param("bernoulli", "conv", marks=pytest.mark.slow)],  # about 5 s
)  # fmt: skip
def test_iwae_with_many_samples_agrees_with_quadrature(likelihood, arch):
    model, x = trained(likelihood, arch), images()[:4]
    exact = quadrature_nll(model, x)
    assert torch.allclose(exact, quadrature_nll(model, x, span=6.0, points=401), atol=1e-6)
    per_image = importance_weighted(model, x, k=20_000, seed=3)
    assert per_image.kl.min() > 0.1  # the posterior has not collapsed onto the prior
    assert (per_image.iwae_nll - exact).abs().max().item() < 0.2
    # The negative ELBO bounds -log p(x) from above, and is a looser bound than IWAE's.
    negative_elbo = per_image.reconstruction + per_image.kl
    assert bool((negative_elbo >= per_image.iwae_nll - 1e-9).all())
    assert bool((negative_elbo > exact).all())


def test_iwae_estimate_decreases_with_k_towards_the_true_value():
    model, x = trained("bernoulli"), images()[:16]
    with torch.no_grad():
        model.mu_head.bias += 0.5  # a worse proposal q makes the gap, and its closing, visible
    exact = quadrature_nll(model, x).mean().item()
    estimates = [
        sum(
            estimate(importance_weighted(model, x, k, seed=seed).iwae_nll).mean for seed in range(3)
        )
        / 3
        for k in (1, 4, 16, 64, 256, 1024)
    ]
    assert all(a > b for a, b in zip(estimates, estimates[1:])), estimates
    assert estimates[-1] > exact - 0.01
    assert estimates[0] - exact > 1.0  # the K = 1 estimate is the ELBO: a loose bound here


def test_same_seed_same_numbers_and_chunking_only_changes_the_noise():
    model, x = trained("continuous-bernoulli", steps=50), images()[:20]
    first = importance_weighted(model, x, k=300, seed=7)
    again = importance_weighted(model, x, k=300, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other_seed = importance_weighted(model, x, k=300, seed=8)
    assert not torch.equal(first.iwae_nll, other_seed.iwae_nll)
    batch, chunk = plan_chunks(model, len(x), 300, 200_000)
    assert batch == 1 and chunk < 300  # a small bound splits both images and samples
    small = importance_weighted(model, x, k=300, max_memory=200_000, seed=7)
    assert not torch.equal(first.iwae_nll, small.iwae_nll)
    assert abs(first.iwae_nll.mean() - small.iwae_nll.mean()).item() < 0.05
    assert torch.allclose(first.kl, small.kl)


def test_a_max_memory_beyond_the_free_memory_is_refused_before_anything_is_allocated(
    monkeypatch,
):
    model, x = VAE(ModelConfig()), images()[:20]
    monkeypatch.setattr("vaelab._resources.available_memory", lambda: 10**6)
    refusal = (
        r"^IWAE in blocks of 20 images x 5000 samples \(max_memory 1TB; a smaller one .* needs "
        r".* of memory, .* are available$"
    )
    with pytest.raises(VaelabError, match=refusal):
        importance_weighted(model, x, k=5000, max_memory="1TB")


def test_chunks_fit_the_memory_bound():
    model = VAE(ModelConfig())
    for bound in (10**6, 10**8, 10**9):
        batch, chunk = plan_chunks(model, 10_000, 5000, bound)
        # per pair: decoder activations (~1.5k floats) and likelihood temporaries (8 x 784)
        assert batch * chunk * 4 * (1506 + 8 * 784) <= bound
        assert batch * chunk * 4 * (1506 + 8 * 784) > bound / 2 or batch == 10_000
    with pytest.raises(VaelabError, match="below what one sample needs"):
        plan_chunks(model, 10, 10, 1000)


def test_parse_size_reads_decimal_and_binary_units_and_refuses_the_rest():
    assert parse_size("1GB") == 10**9 and parse_size("512MiB") == 512 * 2**20
    assert parse_size("2g") == 2 * 10**9 and parse_size(" 1.5 kB ") == 1500
    assert parse_size("4096") == 4096 and parse_size(123) == 123
    for bad in ("lots", "1XB", "-1GB", "0"):
        with pytest.raises(VaelabError, match="max_memory"):
            parse_size(bad)


def test_eval_json_has_exactly_the_report_keys(tmp_path):
    model, x = trained("gaussian", steps=20), images()[:8]
    report = evaluate_likelihood(model, x, k=10, seed=5)
    assert report.negative_elbo_nats == pytest.approx(report.reconstruction_nats + report.kl_nats)
    path = save_eval(tmp_path, report)
    raw = json.loads(path.read_text())
    assert path.name == EVAL_FILE and set(raw) == EVAL_KEYS
    assert raw["likelihood"] == "gaussian" and raw["images"] == 8 and raw["iw_samples"] == 10
    assert [p.name for p in tmp_path.iterdir()] == [EVAL_FILE]  # no temporary file left


def test_zero_samples_or_no_images_are_refused():
    model, x = trained("bernoulli", steps=1), images()[:2]
    with pytest.raises(VaelabError, match="at least 1"):
        importance_weighted(model, x, k=0)
    with pytest.raises(VaelabError, match="no images"):
        importance_weighted(model, x[:0], k=5)


def test_per_epoch_evaluate_keeps_the_tutorial_numbers_and_units():
    torch.manual_seed(0)
    model, x = VAE(ModelConfig(input_dim=16, hidden=(8, 4))), images(64).float()
    metrics = evaluate(model, x, batch_size=64, seed=1)
    recon, mu, logvar = model(x, torch.Generator().manual_seed(1))
    expected = tutorial_loss(recon, x, mu, logvar)
    assert metrics.loss == pytest.approx(expected.loss.item(), rel=1e-6)
    assert metrics.negative_elbo_nats(16) == pytest.approx(
        metrics.loss + 0.5 * 16 * math.log(2 * math.pi)
    )
    bernoulli = trained("bernoulli", steps=1).float()
    nats = evaluate(bernoulli, x, batch_size=64)
    assert nats.likelihood == "bernoulli" and nats.negative_elbo_nats(16) == nats.loss
