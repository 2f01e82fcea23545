"""The variational auto-encoder as a plain `nn.Module`: encode, reparameterize, decode, loss."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from vaelab.config import GAUSSIAN_LIKELIHOODS, ModelConfig
from vaelab.config_sections import short
from vaelab.errors import VaelabError
from vaelab.models.bounds import ImportanceTerms, log_posterior_of_noise, sampled_bound
from vaelab.models.layers import LogVarianceHead, he_init
from vaelab.models.likelihoods import LossTerms, decoder_mean, log_likelihood, negative_elbo
from vaelab.models.networks import (
    as_input_of,
    at_least_fp32,
    conv_decoder,
    conv_encoder,
    conv_output,
    dense_stack,
)
from vaelab.models.priors import Prior, make_prior


class VAEOutput(NamedTuple):
    """What a forward pass returns: the reconstruction and the posterior's parameters."""

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    """Encoder q(z|x) = N(mu, exp(logvar)), a prior p(z), decoder p(x|z) named by the config.

    The defaults are the tutorial's MLP: encoder D-400-200-100-20 with mu and log-variance heads,
    decoder latent-20-100-200-400-D, prior N(0, I). `arch='gated'` uses gated dense layers with
    the VampPrior paper's initialisation and log-variance bounds; `arch='conv'` two stride-2
    convolutions and a dense layer, mirrored with transposed convolutions. Gaussian likelihoods
    add a learned `log_scale`. A conditional model takes the one-hot class y into both networks
    and models p(x|y) = E_q[p(x|z, y)].

    Your own networks: `VAE(config, encoder=..., decoder=...)`. The encoder maps flat images
    (N, input_dim), values in [0, 1], to (mu, logvar), a pair of (N, latent_dim) tensors (or one
    (N, 2 * latent_dim) tensor, mu first); the decoder maps codes (N, latent_dim) to one logit
    per value, (N, input_dim), which the likelihood turns into p(x|z). Both are checked on a
    batch of two images when the VAE is built.
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        config = config or ModelConfig()
        custom = encoder is not None or decoder is not None
        if custom:
            if encoder is None or decoder is None:
                raise VaelabError(
                    "give both encoder and decoder for networks of your own",
                    parameters=("encoder", "decoder"),
                )
            config = replace(config, arch="custom")
        elif config.arch == "custom":
            raise VaelabError(
                "this model was built from networks of your own: give the same encoder and "
                "decoder modules (vaelab never stores code)",
                parameters=("encoder", "decoder"),
            )
        self.config = config
        if torch.get_default_device().type != "meta" and not custom:
            check_model_size(self.config)  # before any layer takes real memory
        if custom:
            assert encoder is not None and decoder is not None
            self.encoder, self.decoder = encoder, decoder
            self.output: nn.Module = nn.Identity()
            self.mu_head: nn.Module | None = None
            self.logvar_head: nn.Module | None = None
        else:
            self._build_networks()
        self._add_likelihood_scale()
        self.prior: Prior = make_prior(
            config.prior, config.components, config.input_dim, config.latent_dim
        )
        if custom:
            check_custom_networks(self)

    def _build_networks(self) -> None:
        config = self.config
        hidden, latent, extra = list(config.hidden), config.latent_dim, config.condition_dim
        conv = config.arch == "conv"
        channels, height, width = config.shape
        # Built in this order so that a seed gives the same initial weights as vaelab 0.1.
        self.encoder = (
            conv_encoder((channels + extra, height, width), config.hidden)
            if conv
            else dense_stack(config.arch, [config.input_dim + extra, *hidden])
        )
        self.mu_head = nn.Linear(hidden[-1], latent)
        self.logvar_head = (
            LogVarianceHead(hidden[-1], latent)
            if config.arch == "gated"
            else nn.Linear(hidden[-1], latent)
        )
        if conv:
            self.decoder = conv_decoder(config.shape, config.hidden, latent + extra)
            self.output = conv_output(config.shape, config.hidden)
        else:
            self.decoder = dense_stack(config.arch, [latent + extra, *reversed(hidden)])
            self.output = nn.Linear(hidden[0], config.input_dim)
        if config.arch == "gated":
            he_init(self)

    def _add_likelihood_scale(self) -> None:
        if self.config.likelihood in GAUSSIAN_LIKELIHOODS:
            per_pixel = self.config.likelihood == "gaussian-per-pixel"
            self.log_scale = nn.Parameter(torch.zeros(self.config.input_dim if per_pixel else 1))
        else:
            self.register_parameter("log_scale", None)

    @property
    def noise_dim(self) -> int:
        """Standard-normal values drawn per sample of the latents: latent_dim."""
        return self.config.latent_dim

    @property
    def closed_form_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form (the N(0, I) prior)."""
        return bool(self.prior.closed_form_kl)

    def conditioned(self, values: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """`values` (..., n) with the one-hot class appended, (..., n + classes), for a
        conditional model; unchanged otherwise. A conditional model needs the labels."""
        if not self.config.conditional:
            return values
        one_hot = class_one_hot(labels, self.config.classes).to(values)
        return torch.cat([values, one_hot.expand(*values.shape[:-1], -1)], dim=-1)

    def _encoder_input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.config.conditional or self.config.arch != "conv":
            return self.conditioned(x, labels)
        # the conv encoder reads the class as constant maps after the image's channels
        _, height, width = self.config.shape
        planes = class_one_hot(labels, self.config.classes).to(x)
        return torch.cat([x, planes.repeat_interleave(height * width, dim=-1)], dim=-1)

    def encode(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x) (q(z|x, y) for a conditional model)."""
        inputs = self._encoder_input(x, labels)
        h = self.encoder(as_input_of(self.encoder, inputs))
        if self.mu_head is None or self.logvar_head is None:
            mu, logvar = split_posterior(h, self.config.latent_dim)
        else:
            mu, logvar = self.mu_head(h), self.logvar_head(h)
        # Keeps the latent statistics (and so the KL) in fp32 under bf16 autocast or in a bf16 copy.
        return at_least_fp32(mu), at_least_fp32(logvar)

    def reparameterize(
        self,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) drawn from `generator` unless given."""
        eps = (
            torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
            if noise is None
            else noise
        )
        return mu + eps * torch.exp(0.5 * logvar)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per pixel for latent codes `z` (..., latent_dim) -> (..., D)."""
        flat = self.conditioned(z, labels).reshape(-1, z.shape[-1] + self.config.condition_dim)
        hidden = self.decoder(as_input_of(self.decoder, flat))
        logits = at_least_fp32(self.output(hidden))  # the likelihood in fp32 or fp64
        return logits.reshape(*z.shape[:-1], self.config.input_dim)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The expected image under p(x|z), intensities in (0, 1), for latent codes `z`."""
        return decoder_mean(self.config.likelihood, self.decode_logits(z, labels))

    def log_likelihood(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image in nats, all constants included, from the decoder's logits."""
        return log_likelihood(self.config.likelihood, logits, x, self.log_scale)

    def top_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of the latent the prior is on (the VampPrior's components come from it)."""
        return self.encode(x)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), summed over the last axis, for codes (..., latent_dim)."""
        return self.prior.log_prob(z, self.top_posterior)

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` latent codes z ~ p(z) (float32, on the generator's device)."""
        return self.prior.sample(n, self.config.latent_dim, generator, self.top_posterior)

    def importance_terms(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        precise: bool = False,
    ) -> ImportanceTerms:
        """log p(x|z), log p(z) and log q(z|x), each (S, N), for z = mu + noise * std with
        `noise` (S, N, noise_dim); `precise` computes the three in float64 (for evaluation)."""
        mu, logvar = self.encode(x, labels)
        eps = noise.to(mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_px_z = self.log_likelihood(x, self.decode_logits(z, labels))
        if precise:
            z, eps, logvar, log_px_z = z.double(), eps.double(), logvar.double(), log_px_z.double()
        return ImportanceTerms(log_px_z, self.log_prior(z), log_posterior_of_noise(eps, logvar))

    def kl_divergence(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image in closed form, float64 (the N(0, I) prior only)."""
        mu, logvar = self.encode(x, labels)
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).double().sum(-1)

    def loss(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        kl_scale: float = 1.0,
        noise: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        objective: str = "elbo",
    ) -> LossTerms:
        """The training loss of a batch, per image.

        `noise` (N, noise_dim) is one sample of eps per image, (S, N, noise_dim) S samples;
        without it one sample is drawn from `generator`. Distributed ranks pass their rows of the
        whole batch's noise so that they match a single-process run. `objective` 'elbo' averages
        the ELBO over the samples (with the closed-form KL where there is one), 'iwae' is the
        importance-weighted bound of the samples.
        """
        if noise is None:
            dtype = torch.promote_types(x.dtype, torch.float32)
            noise = torch.randn(
                (len(x), self.noise_dim), generator=generator, device=x.device, dtype=dtype
            )
        samples = noise if noise.dim() == 3 else noise.unsqueeze(0)
        if objective == "iwae" or not self.closed_form_kl:
            terms = self.importance_terms(x, samples, labels)
            return sampled_bound(
                self.config.likelihood, terms, self.config.input_dim, kl_scale, objective
            )
        mu, logvar = self.encode(x, labels)
        count = len(samples)
        z = self.reparameterize(mu, logvar, noise=samples.to(mu.dtype)).reshape(-1, mu.shape[-1])
        repeated_labels = None if labels is None else labels.repeat(count)
        logits = self.decode_logits(z, repeated_labels)
        if count > 1:  # S samples as S copies of the batch: the means average over the samples
            x, mu, logvar = x.repeat(count, 1), mu.repeat(count, 1), logvar.repeat(count, 1)
        return negative_elbo(
            self.config.likelihood, logits, x, mu, logvar, self.log_scale, kl_scale
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Reconstruction (decoder mean of one sampled z) and the posterior's parameters."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return VAEOutput(self.decode(z), mu, logvar)


def class_one_hot(labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    """One-hot rows (N, classes) of integer class labels, each checked to be in range."""
    if labels is None:
        raise VaelabError(
            "this model is conditional: give the class of each image (labels)",
            parameters=("labels",),
        )
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dim() != 1:
        raise VaelabError("labels must be one whole-number class per image", parameters=("labels",))
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise VaelabError(
            f"labels must be classes 0 to {classes - 1} of the model, got "
            f"{int(labels.min())} to {int(labels.max())}",
            parameters=("labels",),
        )
    return nn.functional.one_hot(labels.long(), classes)


def split_posterior(
    encoded: torch.Tensor | tuple[torch.Tensor, torch.Tensor], latent_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) from a custom encoder's output: a pair, or one tensor of mu then logvar."""
    if isinstance(encoded, (tuple, list)) and len(encoded) == 2:
        return encoded[0], encoded[1]
    if isinstance(encoded, torch.Tensor) and encoded.shape[-1] == 2 * latent_dim:
        return encoded[..., :latent_dim], encoded[..., latent_dim:]
    shape = tuple(encoded.shape) if isinstance(encoded, torch.Tensor) else type(encoded).__name__
    raise VaelabError(
        f"the encoder must return (mu, logvar) or one (N, {2 * latent_dim}) tensor, got {shape}",
        parameters=("encoder",),
    )


def check_custom_networks(model: VAE) -> None:
    """Run a batch of two images through custom networks and check the shapes they return."""
    config = model.config
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    if device.type == "meta":
        return
    probe = torch.full((2, config.input_dim), 0.5, device=device)
    try:
        with torch.no_grad(), evaluating(model):
            mu, logvar = model.encode(probe)
            logits = model.decoder(mu)
    except VaelabError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise VaelabError(
            f"the encoder and decoder do not run on (2, {config.input_dim}) images: {exc}",
            parameters=("encoder", "decoder"),
        ) from None
    expected = (2, config.latent_dim)
    if tuple(mu.shape) != expected or tuple(logvar.shape) != expected:
        raise VaelabError(
            f"the encoder must return mu and logvar of shape {expected}, got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}",
            parameters=("encoder",),
        )
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, config.input_dim):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise VaelabError(
            f"the decoder must return logits of shape (2, {config.input_dim}), got {got}",
            parameters=("decoder",),
        )


# 500 million weights take 2 GB in fp32 and 6 GB with Adam's two moments: far past any model of
# these images, and a typo (`hidden=100000000`) is refused before it fills the memory.
MAX_PARAMETERS = 500_000_000


def parameter_count(config: ModelConfig) -> int:
    """How many weights the VAE of `config` has, counted on PyTorch's meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(config).parameters())


def check_model_size(config: ModelConfig) -> None:
    """Refuse a model of more than MAX_PARAMETERS weights."""
    try:
        count = parameter_count(config)
    except (RuntimeError, OverflowError):  # a layer's size overflows torch's 64-bit count
        count = None
    if count is None or count > MAX_PARAMETERS:
        many = "more than 2**63" if count is None else f"{count:,}"
        raise VaelabError(
            f"the model would have {many} weights (hidden {short(list(config.hidden))}, latent_dim "
            f"{config.latent_dim}), more than the {MAX_PARAMETERS:,} vaelab builds; choose a "
            "smaller hidden or latent_dim",
            parameters=("hidden", "latent_dim"),
        )


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the duration, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
