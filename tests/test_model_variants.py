"""The field's model variants: the IWAE objective, the VampPrior and the mixture prior, the
two-layer hierarchical VAE, gated layers, conditional VAEs and networks of your own, each
trained, saved, loaded, resumed and scored against hand and quadrature computations."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import fit_in_quarters, make_tiny_dataset, synthetic_images
from vaelab import rundir
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, to_unit_float
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate, importance_weighted
from vaelab.latent import class_index, decode, encode, prior_samples, sample
from vaelab.models import VAE, HierarchicalVAE, build_model
from vaelab.models.bounds import ImportanceTerms, log_standard_normal, sampled_bound
from vaelab.models.likelihoods import log_likelihood
from vaelab.models.priors import GaussianMixturePrior
from vaelab.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(count: int = 256) -> torch.Tensor:
    return to_unit_float(synthetic_images(count, seed=1)[0]).double().reshape(count, -1)


def labels(count: int = 256) -> torch.Tensor:
    return torch.as_tensor(synthetic_images(count, seed=1)[1], dtype=torch.long)


def fitted(config: ModelConfig, steps: int = 300, with_labels: bool = False) -> VAE:
    """A small float64 model fitted to 4x4 images, so that its posterior means something."""
    torch.manual_seed(0)
    model = build_model(config).double()
    return fit_in_quarters(model, images(), steps, labels() if with_labels else None)


@torch.no_grad()
def quadrature_nll(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, span: float = 7.0, points=561
) -> torch.Tensor:
    """-log p(x) (or -log p(x|y)) = -log sum_grid p(x|z) p(z) dz over a fine grid of the
    latent plane, with the model's own prior log-density."""
    axis = torch.linspace(-span, span, points, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)
    log_prior = model.log_prior(z)
    cell = 2 * math.log(axis[1] - axis[0])
    values = []
    for i, xi in enumerate(x):
        given = None if y is None else y[i].repeat(len(z))
        logits = model.decode_logits(z, given)
        values.append(-(torch.logsumexp(model.log_likelihood(xi, logits) + log_prior, 0) + cell))
    return torch.stack(values)


# ---------------------------------------------------------------- the IWAE objective


def _hand_log_weights(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log w = log p(x|z) + log N(z; 0, I) - log q(z|x), written out from the model's parts."""
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu + eps * std
    log_px = log_likelihood("bernoulli", model.decode_logits(z), x)
    log_q = (-0.5 * ((z - mu) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_px + log_standard_normal(z) - log_q


def test_iwae_loss_and_its_gradient_match_a_hand_computation():
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, likelihood="bernoulli")).double()
    x, eps = images(8), torch.randn(5, 8, 2, dtype=torch.float64)
    loss = model.loss(x, noise=eps, objective="iwae").loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    log_w = _hand_log_weights(model, x, eps)
    hand = -(torch.logsumexp(log_w, 0) - math.log(5)).mean()
    assert torch.allclose(loss, hand, atol=1e-10)
    # The paper's gradient: each sample's gradient weighted by its normalised weight w / sum(w).
    weights = torch.softmax(log_w, 0).detach()
    surrogate = -(weights * log_w).sum(0).mean()
    hand_grads = torch.autograd.grad(surrogate, list(model.parameters()), retain_graph=True)
    for got, expected in zip(grads, hand_grads):
        assert torch.allclose(got, expected, atol=1e-10)
    # Not the ELBO's gradient (equal weights): the weights matter.
    elbo_grads = torch.autograd.grad(-log_w.mean(), list(model.parameters()))
    assert not all(torch.allclose(a, b) for a, b in zip(grads, elbo_grads))


def test_iwae_with_one_sample_is_the_elbo_and_more_samples_bound_it():
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, likelihood="bernoulli", prior="vamp",
                            components=4)).double()  # fmt: skip
    x, eps = images(16), torch.randn(1, 16, 2, dtype=torch.float64)
    iwae = model.loss(x, noise=eps, objective="iwae")
    elbo = model.loss(x, noise=eps, objective="elbo")
    assert torch.allclose(iwae.loss, elbo.loss, atol=1e-12)
    many = torch.randn(64, 16, 2, dtype=torch.float64)
    assert model.loss(x, noise=many, objective="iwae").loss < model.loss(x, noise=many).loss


def test_the_elbo_of_several_samples_averages_the_reconstruction_with_the_closed_form_kl():
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, likelihood="bernoulli")).double()
    x, eps = images(8), torch.randn(3, 8, 2, dtype=torch.float64)
    terms = model.loss(x, noise=eps)
    singles = [model.loss(x, noise=eps[s]) for s in range(3)]
    assert torch.allclose(terms.reconstruction, sum(t.reconstruction for t in singles) / 3)
    assert torch.allclose(terms.kld, singles[0].kld)  # the closed form does not depend on eps


def test_the_sampled_bound_keeps_the_tutorials_units():
    log_px = torch.tensor([[-10.0, -12.0]], dtype=torch.float64)
    terms = ImportanceTerms(log_px, torch.zeros_like(log_px), torch.zeros_like(log_px))
    mse = sampled_bound("tutorial-mse", terms, input_dim=4)
    constant = 0.5 * 4 * math.log(2 * math.pi)
    assert mse.reconstruction.item() == pytest.approx(11.0 - constant)
    assert sampled_bound("bernoulli", terms, 4).reconstruction.item() == pytest.approx(11.0)


# ---------------------------------------------------------------- priors


def test_the_mixture_log_density_equals_the_mixture_summed_term_by_term():
    torch.manual_seed(1)
    prior = GaussianMixturePrior(7, 3).double()
    with torch.no_grad():
        prior.logvars.normal_(0.0, 0.5)
    z = torch.randn(4, 5, 3, dtype=torch.float64) * 2
    got = prior.log_prob(z, posterior=None)
    means, logvars = prior.means, prior.logvars
    direct = torch.zeros(4, 5, dtype=torch.float64)
    for i in range(4):
        for j in range(5):
            density = sum(
                torch.distributions.Normal(means[k], torch.exp(0.5 * logvars[k]))
                .log_prob(z[i, j]).sum().exp()
                for k in range(7)
            ) / 7  # fmt: skip
            direct[i, j] = torch.log(density)
    assert torch.allclose(got, direct, atol=1e-10)


def test_the_vamp_prior_is_the_mixture_of_the_posteriors_of_its_pseudo_inputs():
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, prior="vamp", components=3)).double()
    pseudo = model.prior.pseudo_inputs()
    assert pseudo.shape == (3, 16) and bool(((pseudo > 0.45) & (pseudo < 0.5)).all())
    z = torch.randn(6, 2, dtype=torch.float64)
    mu, logvar = model.encode(pseudo)
    components = torch.stack(
        [torch.distributions.Normal(mu[k], torch.exp(0.5 * logvar[k])).log_prob(z).sum(-1)
         for k in range(3)]
    )  # fmt: skip
    expected = torch.logsumexp(components, 0) - math.log(3)
    assert torch.allclose(model.log_prior(z), expected, atol=1e-10)
    # and the pseudo-inputs learn: the prior's parameters receive gradients from the loss
    model.loss(images(8)).loss.backward()
    assert model.prior.pseudo_logits.grad is not None
    assert model.prior.pseudo_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_iwae_of_a_mixture_prior_agrees_with_quadrature(prior):
    model = fitted(ModelConfig(16, (32, 16), 2, likelihood="bernoulli", prior=prior,
                               components=5))  # fmt: skip
    x = images()[:4]
    exact = quadrature_nll(model, x)
    per_image = importance_weighted(model, x, k=20_000, seed=3)
    assert (per_image.iwae_nll - exact).abs().max().item() < 0.2
    negative_elbo = per_image.reconstruction + per_image.kl
    assert bool((negative_elbo > exact).all())


def test_prior_samples_come_from_the_models_prior_and_repeat_for_a_seed():
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, prior="mog", components=2))
    with torch.no_grad():
        model.prior.means.copy_(torch.tensor([[-8.0, 0.0], [8.0, 0.0]]))
        model.prior.logvars.fill_(-6.0)
    codes = prior_samples(model, 400, seed=5)
    assert torch.equal(codes, prior_samples(model, 400, seed=5))
    assert ((codes[:, 0].abs() - 8).abs() < 0.3).all()  # every code near one of the two means
    assert 120 < int((codes[:, 0] > 0).sum()) < 280  # both components drawn
    assert sample(model, 3, seed=5).shape == (3, 16)


# ---------------------------------------------------------------- the hierarchical VAE


@pytest.mark.parametrize("prior", ["gaussian", "vamp"])
def test_the_hierarchical_iwae_bound_is_below_its_elbo_and_tightens_with_k(prior):
    model = fitted(ModelConfig(16, (24,), 2, likelihood="bernoulli", stochastic_layers=2,
                               prior=prior, components=4), steps=200)  # fmt: skip
    assert isinstance(model, HierarchicalVAE) and model.noise_dim == 4
    x = images()[:32]
    small = importance_weighted(model, x, k=4, seed=1)
    large = importance_weighted(model, x, k=400, seed=1)
    negative_elbo = large.reconstruction + large.kl
    assert bool((large.iwae_nll <= negative_elbo + 1e-9).all())
    assert large.iwae_nll.mean() < small.iwae_nll.mean() < negative_elbo.mean()
    # the training loss's Monte Carlo -ELBO estimates the same bound
    eps = torch.randn(2000, 32, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        assert model.loss(x, noise=eps).loss.item() == pytest.approx(
            negative_elbo.mean().item(), abs=0.3
        )


def test_the_conv_hierarchical_vae_takes_any_image_size():
    config = ModelConfig(3 * 9 * 7, latent_dim=3, arch="conv", stochastic_layers=2,
                         likelihood="bernoulli", image_shape=(3, 9, 7))  # fmt: skip
    model = build_model(config)
    x = torch.rand(5, 3 * 9 * 7)
    terms = model.importance_terms(x, torch.randn(2, 5, model.noise_dim))
    assert all(t.shape == (2, 5) for t in terms)
    assert model.decode(torch.randn(4, 3)).shape == (4, 3 * 9 * 7)


# ---------------------------------------------------------------- gated layers


def test_the_gated_arch_is_the_papers_mlp():
    model = VAE(ModelConfig(arch="gated", latent_dim=40, likelihood="bernoulli"))
    assert model.config.hidden == (300, 300)
    widths = [m.h.out_features for m in model.encoder]
    assert widths == [300, 300] and all(hasattr(m, "g") for m in model.encoder)
    huge = model.logvar_head(torch.full((1, 300), 1e3))
    huge = huge.detach()
    assert float(huge.max()) <= 2.0 and float(huge.min()) >= -6.0  # bounded as in the paper


# ---------------------------------------------------------------- conditional VAE


def test_conditional_iwae_agrees_with_quadrature_of_p_x_given_y():
    config = ModelConfig(16, (32, 16), 2, likelihood="bernoulli", conditional=True, classes=2)
    model = fitted(config, with_labels=True)
    x, y = images()[:4], labels()[:4]
    exact = quadrature_nll(model, x, y)
    per_image = importance_weighted(model, x, k=20_000, seed=3, labels=y)
    assert (per_image.iwae_nll - exact).abs().max().item() < 0.2
    # the wrong class explains the image worse
    wrong = importance_weighted(model, x, k=2000, seed=3, labels=1 - y)
    assert bool((wrong.iwae_nll > per_image.iwae_nll).all())


def _quadrant_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of 8x8 images: one bright quadrant each, with noise."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, size=count)
    pixels = rng.integers(0, 50, size=(count, 8, 8))
    for c in range(4):
        rows, cols = divmod(c, 2)
        pixels[classes == c, rows * 4 : rows * 4 + 4, cols * 4 : cols * 4 + 4] += 200
    return pixels.astype(np.uint8), classes


def test_conditional_samples_are_of_the_class_asked_for():
    train_x, train_y = _quadrant_images(800, seed=0)
    test_x, test_y = _quadrant_images(100, seed=1)
    dataset = Dataset(
        torch.as_tensor(train_x), torch.as_tensor(train_y), torch.as_tensor(test_x),
        torch.as_tensor(test_y), (8, 8), ("a", "b", "c", "d"), "quadrants",
    )  # fmt: skip
    config = RunConfig(
        model=ModelConfig(hidden=(64, 32), latent_dim=2, likelihood="bernoulli",
                          conditional=True),
        train=TrainConfig(epochs=15, batch_size=50, lr=3e-3, device="cpu", precision="32"),
    )  # fmt: skip
    model = train(config, dataset, log=None).model
    assert model.config.classes == 4
    templates = torch.stack([torch.as_tensor(train_x[train_y == c]).float().mean(0).flatten()
                             for c in range(4)]) / 255  # fmt: skip
    agree = 0
    for c in range(4):
        drawn = sample(model, 50, seed=c, label=c)
        nearest = torch.cdist(drawn, templates).argmin(1)
        agree += int((nearest == c).sum())
    assert agree / 200 >= 0.9
    assert class_index(model, ("a", "b", "c", "d"), "C") == 2
    with pytest.raises(VaelabError, match="not one of the model's classes"):
        class_index(model, ("a", "b", "c", "d"), "e")


def test_a_conditional_model_needs_labels_and_checks_them():
    model = VAE(ModelConfig(16, (8,), 2, conditional=True, classes=3))
    with pytest.raises(VaelabError, match="give the class of each image"):
        encode(model, torch.rand(4, 16))
    with pytest.raises(VaelabError, match="classes 0 to 2"):
        decode(model, torch.zeros(2, 2), labels=torch.tensor([0, 3]))
    assert decode(model, torch.zeros(2, 2), labels=1).shape == (2, 16)
    with pytest.raises(VaelabError, match="only for a conditional model"):
        class_index(VAE(ModelConfig(16, (8,), 2)), (), "1")


def test_conditional_needs_labelled_data():
    dataset = make_tiny_dataset()
    unlabelled = Dataset(dataset.train_images, None, dataset.test_images, None, (4, 4), (), "x")
    config = RunConfig(model=ModelConfig(hidden=(8,), conditional=True),
                       train=TrainConfig(epochs=1, batch_size=32, device="cpu"))  # fmt: skip
    with pytest.raises(VaelabError, match="conditional needs labelled images"):
        train(config, unlabelled, log=None)


# ---------------------------------------------------------------- your own networks


class PairEncoder(nn.Module):
    """An encoder of one's own: returns (mu, logvar)."""

    def __init__(self, pixels: int, latent: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(pixels, 10), nn.Tanh())
        self.mu, self.logvar = nn.Linear(10, latent), nn.Linear(10, latent)

    def forward(self, x):
        h = self.body(x)
        return self.mu(h), self.logvar(h)


def custom_networks(pixels: int = 16, latent: int = 2) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    decoder = nn.Sequential(nn.Linear(latent, 10), nn.Tanh(), nn.Linear(10, pixels))
    return PairEncoder(pixels, latent), decoder


def test_networks_of_your_own_train_save_and_load_with_your_code(tmp_path):
    encoder, decoder = custom_networks()
    model = VAE(ModelConfig(16, latent_dim=2, likelihood="bernoulli"), encoder, decoder)
    assert model.config.arch == "custom"
    config = RunConfig(train=TrainConfig(epochs=2, batch_size=32, device="cpu", precision="32"))
    result = train(config, make_tiny_dataset(), run_dir=tmp_path / "run", log=None, model=model)
    with pytest.raises(VaelabError, match="trained with networks of your own"):
        rundir.load_model(tmp_path / "run")
    loaded = rundir.load_model(tmp_path / "run", encoder=custom_networks()[0],
                               decoder=custom_networks()[1])  # fmt: skip
    x = make_tiny_dataset().test_images.tensor()
    assert torch.equal(encode(loaded, x), encode(result.model, x))
    # a single flat (N, 2 * latent) output works too
    flat = nn.Sequential(nn.Linear(16, 4))
    assert VAE(ModelConfig(16, latent_dim=2), flat, decoder).encode(x)[0].shape == (len(x), 2)


@pytest.mark.parametrize(
    ("encoder", "decoder", "message"),
    [(nn.Linear(16, 3), nn.Linear(2, 16), "encoder must return"),
     (nn.Linear(16, 4), nn.Linear(2, 15), "decoder must return logits of shape"),
     (nn.Linear(15, 4), nn.Linear(2, 16), "do not run on"),
     (None, nn.Linear(2, 16), "give both encoder and decoder")],
)  # fmt: skip
def test_networks_of_your_own_that_break_the_contract_are_refused(encoder, decoder, message):
    with pytest.raises(VaelabError, match=message):
        VAE(ModelConfig(16, latent_dim=2), encoder, decoder)


def test_a_model_of_another_size_than_the_data_is_refused():
    encoder, decoder = custom_networks(pixels=9)
    model = VAE(ModelConfig(9, latent_dim=2), encoder, decoder)
    with pytest.raises(VaelabError, match="takes 9 values per image, the data has 16"):
        train(RunConfig(train=TrainConfig(epochs=1, batch_size=32, device="cpu")),
              make_tiny_dataset(), log=None, model=model)  # fmt: skip


# ---------------------------------------------------------------- every model: save, load, resume

VARIANTS = {
    "gated-vamp": (dict(arch="gated", hidden=(12, 8), prior="vamp", components=6), {}),
    "mog": (dict(hidden=(12,), prior="mog", components=3), {}),
    "hvae-vamp": (dict(hidden=(12, 8), stochastic_layers=2, prior="vamp", components=4), {}),
    "conv-hvae": (dict(arch="conv", stochastic_layers=2), {}),
    "conditional": (dict(hidden=(12,), conditional=True), {}),
    "conditional-conv": (dict(arch="conv", hidden=(4, 4, 8), conditional=True), {}),
    "iwae": (dict(hidden=(12,), prior="vamp", components=3),
             dict(objective="iwae", train_samples=3)),
}  # fmt: skip


def variant_config(name: str, epochs: int) -> RunConfig:
    model, train_options = VARIANTS[name]
    return RunConfig(
        model=ModelConfig(latent_dim=2, likelihood="bernoulli", **model),
        train=TrainConfig(epochs=epochs, batch_size=64, device="cpu", precision="32",
                          lr_schedule="constant", **train_options),
    )  # fmt: skip


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_model_saves_loads_and_resumes_bit_for_bit(name, tmp_path):
    dataset = make_tiny_dataset()
    straight = train(variant_config(name, 2), dataset, run_dir=tmp_path / "straight", log=None)
    train(variant_config(name, 1), dataset, run_dir=tmp_path / "resumed", log=None)
    resumed = train(variant_config(name, 2), dataset, run_dir=tmp_path / "resumed", log=None,
                    resume=True)  # fmt: skip
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.history[-1].train_loss == resumed.history[-1].train_loss
    loaded = rundir.load_model(tmp_path / "straight")
    assert type(loaded) is type(straight.model)
    y = dataset.test_labels if loaded.config.conditional else None
    x = dataset.test_images
    assert torch.equal(encode(loaded, x, labels=y), encode(straight.model, x, labels=y))
    metrics = evaluate(loaded, x, labels=y)
    assert math.isfinite(metrics.loss)


# ---------------------------------------------------------------- from the command line


def _write_npz(path, labelled: bool = True) -> None:
    train_x, train_y = synthetic_images(256, side=6, seed=1)
    test_x, test_y = synthetic_images(64, side=6, seed=2)
    arrays = {"x_train": train_x, "x_test": test_x}
    if labelled:
        arrays |= {"y_train": train_y, "y_test": test_y}
    np.savez(path, **arrays)


def test_the_models_from_the_command_line(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_npz(tmp_path / "d.npz")
    common = ("--data", "d.npz", "--class-names", "top,bottom", "--epochs", 2, "--batch-size",
              32, "--device", "cpu", "--likelihood", "bernoulli", "--no-tensorboard")  # fmt: skip
    result = cli("train", *common, "--name", "cvae", "--conditional", "--hidden", "16,8")
    assert result.code == 0, result.err
    config = rundir.load_config(tmp_path / "runs" / "cvae")
    assert config.model.conditional and config.model.classes == 2
    assert (tmp_path / "runs" / "cvae" / "figures" / "samples.png").is_file()
    drawn = cli("sample", "runs/cvae", "--class", "bottom", "--n", 8, "--out", "s.npy")
    assert drawn.code == 0 and "of class bottom" in drawn.out
    assert np.load(tmp_path / "s.npy").shape == (8, 6, 6)
    evaluated = cli("evaluate", "runs/cvae", "--iw-samples", 5, "--device", "cpu")
    assert evaluated.code == 0 and "-log p(x|y)" in evaluated.out, evaluated.err
    assert cli("report", "runs/cvae").code == 0

    result = cli("train", *common, "--name", "hvae", "--arch", "gated", "--hidden", "12,12",
                 "--prior", "vamp", "--pseudo-inputs", 7, "--stochastic-layers", 2,
                 "--objective", "iwae", "--train-samples", 3, "--latent-dim", 3)  # fmt: skip
    assert result.code == 0, result.err
    config = rundir.load_config(tmp_path / "runs" / "hvae")
    assert (config.model.prior, config.model.components, config.model.stochastic_layers) == (
        "vamp", 7, 2,
    )  # fmt: skip
    assert (config.train.objective, config.train.train_samples) == ("iwae", 3)
    assert cli("evaluate", "runs/hvae", "--iw-samples", 5, "--device", "cpu").code == 0

    refused = cli("sample", "runs/hvae", "--class", "top")
    assert refused.code == 2 and "only for a conditional model" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    unknown = cli("sample", "runs/cvae", "--class", "sideways")
    assert unknown.code == 2 and "top, bottom" in unknown.err


def test_conditional_on_unlabelled_data_is_one_line_exit_2(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_npz(tmp_path / "u.npz", labelled=False)
    result = cli("train", "--data", "u.npz", "--conditional", "--epochs", 1, "--batch-size", 32,
                 "--device", "cpu", "--hidden", "8")  # fmt: skip
    assert result.code == 2 and "conditional needs labelled images" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_export_refuses_a_conditional_model_and_writes_a_hierarchical_one(tmp_path):
    from vaelab.export import export_model

    conditional = VAE(ModelConfig(16, (8,), 2, conditional=True, classes=2))
    with pytest.raises(VaelabError, match="conditional model takes each image's class"):
        export_model(conditional, tmp_path / "c", format="torchscript")
    hierarchical = build_model(ModelConfig(16, (8,), 2, stochastic_layers=2, prior="vamp",
                                           components=3))  # fmt: skip
    written = export_model(hierarchical, tmp_path / "h", format="torchscript")
    assert written


def test_commands_on_a_run_of_your_own_networks_ask_for_them(tmp_path, cli):
    encoder, decoder = custom_networks()
    model = VAE(ModelConfig(16, latent_dim=2, likelihood="bernoulli"), encoder, decoder)
    config = RunConfig(train=TrainConfig(epochs=1, batch_size=32, device="cpu"))
    dataset = make_tiny_dataset()
    train(config, dataset, run_dir=tmp_path / "run", log=None, model=model)
    result = cli("sample", tmp_path / "run", "--out", tmp_path / "s.npy")
    assert result.code == 2 and "networks of your own" in result.err
    run = rundir.open_run(tmp_path / "run", dataset, encoder=encoder, decoder=decoder)
    assert run.model.config.arch == "custom"


def test_runs_and_compare_tell_the_variants_apart():
    from vaelab.studies.runs import model_variant

    assert model_variant(ModelConfig(), TrainConfig()) == ""
    described = model_variant(
        ModelConfig(prior="vamp", stochastic_layers=2),
        TrainConfig(objective="iwae", train_samples=5),
    )
    assert described == "vamp-prior 2-layer iwae-k5"
    assert model_variant(ModelConfig(conditional=True), TrainConfig()) == "conditional"


def test_the_memory_bound_of_iwae_counts_both_layers_of_a_hierarchical_model():
    from vaelab.evaluation import plan_chunks

    config = ModelConfig(16, (24,), 2, likelihood="bernoulli")
    flat = plan_chunks(VAE(config), 64, 1000, 4_000_000)
    two = plan_chunks(HierarchicalVAE(config), 64, 1000, 4_000_000)
    assert two[0] * two[1] < flat[0] * flat[1]  # more networks per sample: smaller chunks
    model = fitted(replace(config, stochastic_layers=2), steps=20)
    x = images()[:8]
    small = importance_weighted(model, x, k=50, max_memory=60_000, seed=1)
    large = importance_weighted(model, x, k=50, seed=1)
    assert torch.allclose(small.kl.mean(), large.kl.mean(), atol=2.0)


def test_the_pseudo_inputs_figure_draws_a_vamp_models_and_refuses_others():
    from vaelab.viz.plots import pseudo_inputs

    model = VAE(ModelConfig(16, (8,), 2, prior="vamp", components=12))
    figure = pseudo_inputs(model, (4, 4), count=12)
    assert "12 of the VampPrior's 12" in figure.axes[0].get_title()
    with pytest.raises(VaelabError, match="pseudo-inputs belong to the VampPrior"):
        pseudo_inputs(VAE(ModelConfig(16, (8,), 2)), (4, 4))
    with pytest.raises(VaelabError, match="count must be between 1 and 12"):
        pseudo_inputs(model, (4, 4), count=13)


def _benchmark(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_the_binarized_table_runs_the_papers_protocol():
    script = _benchmark("results_binarized")
    args = script.argument_parser().parse_args([])
    config = script.protocol_config("hvae-vamp", args, epochs=2000)
    model, data, train_config = config.model, config.data, config.train
    assert (model.arch, model.hidden, model.latent_dim, model.likelihood) == (
        "gated", (300, 300), 40, "bernoulli",
    )  # fmt: skip
    assert (model.prior, model.components, model.stochastic_layers) == ("vamp", 500, 2)
    assert (data.binarize, data.val_split) == ("dynamic", 10_000)
    assert (train_config.lr, train_config.batch_size, train_config.kl_warmup) == (5e-4, 100, 100)
    assert (train_config.early_stopping, train_config.lr_schedule) == (50, "constant")
    assert script.protocol_config("convhvae", args, 1).model.arch == "conv"
    row = {"model": "VAE (gated MLP)", "prior": "vamp", "published_nats": 227.35,
           "iwae_nll_nats": 230.123, "iwae_stderr_nats": 0.7, "epochs": 120, "best_epoch": 118,
           "kl_warmup": 25, "train_seconds": 1800, "iw_samples": 5000, "images": 1000}  # fmt: skip
    table = script.markdown([row], "cpu")
    assert "| VAE (gated MLP) | VampPrior | 227.35 | 230.12 ± 0.70 | 120 (118) | 25 epochs" in table


def test_evaluation_holds_the_vamp_components_fixed_and_gets_the_same_numbers(monkeypatch):
    torch.manual_seed(0)
    model = VAE(ModelConfig(16, (12,), latent_dim=2, prior="vamp", components=5)).double()
    x = images(6)
    calls = []
    original = model.prior.computed_components
    model.prior.computed_components = lambda posterior: calls.append(1) or original(posterior)
    held = importance_weighted(model, x, k=40, max_memory=40_000, seed=2)
    assert len(calls) == 1  # once for the whole evaluation, however many chunks
    assert model.prior.held is None
    del model.prior.computed_components
    from contextlib import nullcontext

    import vaelab.evaluation

    monkeypatch.setattr(vaelab.evaluation, "held_prior", lambda prior, posterior: nullcontext())
    every_chunk = importance_weighted(model, x, k=40, max_memory=40_000, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(held, every_chunk))
