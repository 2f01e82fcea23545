import torch

from vaelab.config import ModelConfig
from vaelab.models import VAE
from vaelab.models.likelihoods import tutorial_loss


def test_default_is_the_tutorial_architecture():
    model = VAE()
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linear]
    assert shapes == [
        (784, 400), (400, 200), (200, 100), (100, 20),  # encoder
        (20, 2), (20, 2),  # mu and log-variance heads
        (2, 20), (20, 100), (100, 200), (200, 400), (400, 784),  # decoder
    ]  # fmt: skip


def test_forward_shapes_and_range():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=3))
    recon, mu, logvar = model(torch.rand(5, 16))
    assert recon.shape == (5, 16) and mu.shape == (5, 3) and logvar.shape == (5, 3)
    assert bool(((recon > 0) & (recon < 1)).all())


def test_gradients_reach_every_parameter_through_the_sample():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=2))
    x = torch.rand(10, 16)
    recon, mu, logvar = model(x)
    # Only the reconstruction term: the encoder must get gradients through z = mu + eps * std.
    ((recon - x) ** 2).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_full_loss_gradients_are_finite():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=2))
    x = torch.rand(10, 16)
    out = model(x)
    tutorial_loss(out.recon, x, out.mu, out.logvar).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_reparameterize_has_the_right_moments():
    model = VAE(ModelConfig(input_dim=4, hidden=(4,), latent_dim=2))
    mu = torch.tensor([[1.0, -2.0]]).expand(200_000, 2)
    logvar = torch.tensor([[0.0, 2 * torch.log(torch.tensor(3.0))]]).expand(200_000, 2)
    z = model.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 3.0]), atol=0.03)
