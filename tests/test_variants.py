"""Model variants: likelihoods, the conv arch, beta and KL warm-up; each trains, saves and loads."""

import json
import math

import pytest
import torch
from torch import nn

from vaelab import rundir
from vaelab.config import CONV_HIDDEN, ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.models.networks import mlp
from vaelab.training import train

VARIANTS = [
    ("tutorial-mse", "mlp"), ("bernoulli", "mlp"), ("continuous-bernoulli", "mlp"),
    ("gaussian", "mlp"), ("gaussian-per-pixel", "mlp"), ("bernoulli", "conv"),
    ("gaussian-per-pixel", "conv"),
]  # fmt: skip


def config_for(likelihood: str, arch: str, epochs: int = 1, **train_options) -> RunConfig:
    hidden = (4, 8, 16) if arch == "conv" else (8, 4)
    return RunConfig(
        model=ModelConfig(hidden=hidden, arch=arch, likelihood=likelihood),
        train=TrainConfig(epochs=epochs, batch_size=64, test_batch_size=64, precision="32",
                          **train_options),
    )  # fmt: skip


def test_defaults_are_the_tutorials():
    model, train_config = ModelConfig(), TrainConfig()
    assert (model.arch, model.likelihood, model.hidden) == (
        "mlp",
        "tutorial-mse",
        (400, 200, 100, 20),
    )
    assert (train_config.beta, train_config.kl_warmup) == (1.0, 0)
    assert ModelConfig(arch="conv").hidden == CONV_HIDDEN


@pytest.mark.parametrize(
    ("options", "message"),
    [({"arch": "resnet"}, "arch must be one of mlp, gated, conv, custom"),
     ({"likelihood": "poisson"}, "likelihood must be one of tutorial-mse, bernoulli"),
     ({"arch": "conv", "input_dim": 30}, "needs the image_shape .channels, height, width."),
     ({"input_dim": 30, "image_shape": (3, 2, 4)}, "image_shape must be .channels, height"),
     ({"input_dim": 30, "image_shape": (30,)}, "image_shape must be .channels, height"),
     ({"arch": "conv", "hidden": (8, 8)}, "conv 1 channels, conv 2 channels, dense width")],
)  # fmt: skip
def test_bad_model_options_are_refused(options, message):
    with pytest.raises(VaelabError, match=message):
        ModelConfig(**options)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 30, 30), (3, 17, 9), (4, 5, 6)])
def test_conv_vae_takes_any_size_and_crops_its_output_back_exactly(shape):
    config = ModelConfig(
        input_dim=math.prod(shape), image_shape=shape, arch="conv", hidden=(4, 8, 16)
    )
    torch.manual_seed(0)
    model = VAE(config)
    x = torch.rand(3, math.prod(shape))
    out = model(x)
    assert out.recon.shape == x.shape and out.mu.shape == (3, 2)
    assert torch.isfinite(model.loss(x).loss).all()
    # the reconstruction of a value depends on the latent code alone, not on padding it never saw
    padded = model.encoder[0](x)
    assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
    assert torch.equal(padded[..., : shape[1], : shape[2]].flatten(1), x)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"beta": -1.0}, "beta must be"), ({"beta": float("nan")}, "beta must be"),
     ({"kl_warmup": -2}, "kl_warmup")],
)  # fmt: skip
def test_bad_train_options_are_refused(options, message):
    with pytest.raises(VaelabError, match=message):
        TrainConfig(**options)


def test_config_json_of_vaelab_0_1_still_loads(tmp_path):
    old = {
        "model": {"input_dim": 784, "hidden": [400, 200, 100, 20], "latent_dim": 2},
        "data": {"dataset": "fashion-mnist", "data_dir": None, "train_csv": None, "test_csv": None},
        "train": {"epochs": 60, "batch_size": 200, "test_batch_size": 1000, "lr": 0.001,
                  "lr_schedule": "constant", "seed": 0, "device": "auto"},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = rundir.load_config(tmp_path)
    assert config.model == ModelConfig() and config.train.beta == 1.0
    rundir.save_weights(tmp_path, VAE())
    assert rundir.load_model(tmp_path).config.likelihood == "tutorial-mse"


def test_mlp_initial_weights_are_those_of_vaelab_0_1():
    torch.manual_seed(0)
    model = VAE()
    torch.manual_seed(0)
    legacy = [mlp([784, 400, 200, 100, 20]), nn.Linear(20, 2), nn.Linear(20, 2)]
    legacy += [mlp([2, 20, 100, 200, 400]), nn.Linear(400, 784)]
    parts = [model.encoder, model.mu_head, model.logvar_head, model.decoder, model.output]
    for ours, theirs in zip(parts, legacy):
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_conv_arch_shapes_on_28x28():
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="conv", latent_dim=20))
    recon, mu, logvar = model(torch.rand(3, 784))
    assert recon.shape == (3, 784) and mu.shape == logvar.shape == (3, 20)
    assert model.decode_logits(torch.randn(5, 3, 20)).shape == (5, 3, 784)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.stride for m in convs] == [(2, 2)] * 4


@pytest.mark.parametrize(("likelihood", "arch"), VARIANTS)
def test_each_variant_trains_saves_and_loads(tiny_dataset, tmp_path, likelihood, arch):
    result = train(config_for(likelihood, arch), tiny_dataset, run_dir=tmp_path / "run", log=None)
    row = result.history[0]
    assert all(torch.isfinite(torch.tensor([row.train_loss, row.test_loss])))
    loaded = rundir.load_model(tmp_path / "run")
    assert loaded.config == result.model.config
    assert (loaded.log_scale is not None) == likelihood.startswith("gaussian")
    state, again = result.model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.model.decode(z), loaded.decode(z))
    assert bool(((loaded.decode(z) >= 0) & (loaded.decode(z) <= 1)).all())


def test_gaussian_scale_is_learned(tiny_dataset):
    result = train(config_for("gaussian", "mlp", epochs=3, lr=1e-2), tiny_dataset, log=None)
    # It starts at 0 (scale 1.01); these pixels vary far less around the decoder's mean.
    assert result.model.log_scale.item() < -0.05


def test_beta_and_warmup_weight_the_training_kl(tiny_dataset):
    plain = train(config_for("bernoulli", "mlp", epochs=3), tiny_dataset, log=None).history
    assert all(
        r.train_loss == pytest.approx(r.train_reconstruction + r.train_kld, rel=1e-5) for r in plain
    )
    no_kl = train(config_for("bernoulli", "mlp", beta=0.0), tiny_dataset, log=None).history
    assert no_kl[0].train_loss == pytest.approx(no_kl[0].train_reconstruction, rel=1e-6)
    assert no_kl[0].train_kld > 0
    warm = train(config_for("bernoulli", "mlp", epochs=3, kl_warmup=2), tiny_dataset, log=None)
    first, second, third = warm.history
    # Epoch 1 weighs the KL by 0, 1/8, 2/8, 3/8 (mean 3/16); epoch 2 by 4/8 ... 7/8 (mean 11/16).
    assert first.train_loss < first.train_reconstruction + 0.25 * first.train_kld
    assert second.train_reconstruction + 0.5 * second.train_kld < second.train_loss
    assert second.train_loss < second.train_reconstruction + 0.8 * second.train_kld
    assert third.train_loss == pytest.approx(third.train_reconstruction + third.train_kld, rel=1e-5)
    # The test loss is always the full negative ELBO.
    assert third.test_loss == pytest.approx(third.test_reconstruction + third.test_kld, rel=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 10, 7)])
def test_colour_images_of_any_size_train_save_and_load(arch, shape, tmp_path):
    from vaelab import load
    from vaelab.data import Dataset

    generator = torch.Generator().manual_seed(0)
    images = torch.rand((96, *shape), generator=generator)
    dataset = Dataset(images[:64], None, images[64:], None, shape[1:], (), "synthetic rgb",
                      channels=3)  # fmt: skip
    config = RunConfig(
        model=ModelConfig(arch=arch, hidden=(4, 8, 16) if arch == "conv" else (16, 8)),
        train=TrainConfig(epochs=1, batch_size=16, device="cpu", precision="32"),
    )
    result = train(config, dataset, run_dir=tmp_path / "run", log=None)
    assert result.model.config.shape == shape
    assert math.isfinite(result.history[0].test_loss)
    loaded = load(tmp_path / "run")
    assert loaded.config.shape == shape
    x = dataset.test_images[:4]
    assert torch.equal(loaded(x).mu, result.model(x).mu)
