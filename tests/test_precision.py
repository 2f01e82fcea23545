import pytest
import torch

from vaelab.config import ModelConfig, TrainConfig
from vaelab.models import VAE
from vaelab.training import epoch as training
from vaelab.training import precision
from vaelab.training.distributed import SINGLE_PROCESS, World
from vaelab.training.precision import Bf16Copy, autocast

MODELS = {
    "tutorial mlp": ModelConfig(input_dim=64, hidden=(32, 16, 8), latent_dim=2),
    "conv, gaussian-per-pixel": ModelConfig(
        input_dim=64, arch="conv", hidden=(4, 8, 16), likelihood="gaussian-per-pixel"
    ),
    "bernoulli, 3 latents": ModelConfig(input_dim=64, hidden=(16,), latent_dim=3,
                                        likelihood="bernoulli"),
}  # fmt: skip


def autocast_gradients(model: VAE, batch, noise, kl_scale):
    model.zero_grad(set_to_none=True)
    with autocast("bf16-mixed", batch.device):
        terms = model.loss(batch, None, kl_scale, noise)
    terms.loss.backward()
    return terms, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", MODELS)
def test_the_bf16_copy_computes_autocasts_loss_and_gradients_exactly(name):
    torch.manual_seed(0)
    model = VAE(MODELS[name])
    batch, noise = torch.rand(24, 64), torch.randn(24, model.config.latent_dim)
    expected_terms, expected_grads = autocast_gradients(model, batch, noise, 0.7)

    model.zero_grad(set_to_none=True)
    bf16 = Bf16Copy(model)
    terms = bf16.loss(batch, 0.7, noise)
    bf16.backward(terms.loss)
    assert all(torch.equal(a, b) for a, b in zip(terms, expected_terms))
    for (param_name, param), grad in zip(model.named_parameters(), expected_grads):
        assert param.grad.dtype == torch.float32, param_name
        assert torch.equal(param.grad, grad), param_name


def test_bf16_copy_training_takes_autocasts_optimizer_steps_for_channels_last_convolutions():
    """A convolution's backward pass returns channels-last weight gradients; the fused Adam reads
    a weight and its gradient as flat arrays, so the copy's `.grad`s take the weights' layout."""
    torch.manual_seed(0)
    model = VAE(MODELS["conv, gaussian-per-pixel"])
    reference = VAE(MODELS["conv, gaussian-per-pixel"])
    reference.load_state_dict(model.state_dict())
    optimizer = training.make_optimizer(model, TrainConfig())
    reference_optimizer = training.make_optimizer(reference, TrainConfig())
    bf16 = Bf16Copy(model)
    for _ in range(3):
        batch, noise = torch.rand(24, 64), torch.randn(24, 2)
        training.training_step(bf16, optimizer, batch, noise, "bf16-mixed")
        autocast_gradients(reference, batch, noise, 1.0)
        reference_optimizer.step()
        for param in model.parameters():
            assert param.grad.stride() == param.stride()
    for (name, param), expected in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(param, expected), name


def test_the_bf16_copy_follows_the_fp32_weights_after_each_optimizer_step():
    torch.manual_seed(0)
    model = VAE(MODELS["tutorial mlp"])
    optimizer = training.make_optimizer(model, TrainConfig())
    bf16 = Bf16Copy(model)
    batch, noise = torch.rand(24, 64), torch.randn(24, 2)
    for _ in range(3):
        training.training_step(bf16, optimizer, batch, noise, "bf16-mixed")
    reference = VAE(MODELS["tutorial mlp"])
    reference.load_state_dict(model.state_dict())
    with autocast("bf16-mixed", batch.device):
        expected = reference.loss(batch, None, 1.0, noise)
    assert torch.equal(bf16.loss(batch, 1.0, noise).loss, expected.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in bf16.copy.encoder.parameters())


def test_single_processes_train_bf16_through_the_copy_and_ddp_through_autocast(monkeypatch):
    model = VAE(MODELS["tutorial mlp"])
    autograd = TrainConfig(backward="autograd")
    assert isinstance(
        training.make_objective(model, SINGLE_PROCESS, "bf16-mixed", autograd), Bf16Copy
    )
    assert not isinstance(training.make_objective(model, SINGLE_PROCESS, "32", autograd), Bf16Copy)
    monkeypatch.setattr(training, "wrap", lambda model, world: ("ddp", world.size))
    assert training.make_objective(model, World(rank=0, size=2), "bf16-mixed") == ("ddp", 2)


def test_auto_precision_is_bf16_mixed_only_on_cpus_with_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu) == "bf16-mixed"
    assert precision.resolve_precision("auto", torch.device("cuda")) == "32"
    assert precision.resolve_precision("32", cpu) == "32"
    monkeypatch.setattr(precision, "has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu) == "32"
    assert precision.resolve_precision("bf16-mixed", cpu) == "bf16-mixed"
