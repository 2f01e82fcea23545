"""The variational auto-encoder as a plain `nn.Module`: encode, reparameterize, decode, loss."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from vaelab.config import GAUSSIAN_LIKELIHOODS, ModelConfig
from vaelab.errors import VaelabError
from vaelab.models.likelihoods import LossTerms, decoder_mean, log_likelihood, negative_elbo
from vaelab.models.networks import (
    as_input_of,
    at_least_fp32,
    conv_decoder,
    conv_encoder,
    conv_output,
    mlp,
)


class VAEOutput(NamedTuple):
    """What a forward pass returns: the reconstruction and the posterior's parameters."""

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    """Encoder q(z|x) = N(mu, exp(logvar)), prior N(0, I), decoder p(x|z) named by the config.

    The defaults are the tutorial's MLP: encoder D-400-200-100-20 with mu and log-variance heads,
    decoder latent-20-100-200-400-D. `arch='conv'` swaps in two stride-2 convolutions and a dense
    layer, mirrored with transposed convolutions. Gaussian likelihoods add a learned `log_scale`.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        if torch.get_default_device().type != "meta":
            check_model_size(self.config)  # before any layer takes real memory
        hidden, latent = list(self.config.hidden), self.config.latent_dim
        conv = self.config.arch == "conv"
        shape = self.config.shape
        # Built in this order so that a seed gives the same initial weights as vaelab 0.1.
        self.encoder = (
            conv_encoder(shape, self.config.hidden)
            if conv
            else mlp([self.config.input_dim, *hidden])
        )
        self.mu_head = nn.Linear(hidden[-1], latent)
        self.logvar_head = nn.Linear(hidden[-1], latent)
        if conv:
            self.decoder = conv_decoder(shape, self.config.hidden, latent)
            self.output: nn.Module = conv_output(shape, self.config.hidden)
        else:
            self.decoder = mlp([latent, *reversed(hidden)])
            self.output = nn.Linear(hidden[0], self.config.input_dim)
        if self.config.likelihood in GAUSSIAN_LIKELIHOODS:
            pixels = self.config.input_dim if self.config.likelihood == "gaussian-per-pixel" else 1
            self.log_scale = nn.Parameter(torch.zeros(pixels))
        else:
            self.register_parameter("log_scale", None)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance of q(z|x)."""
        h = self.encoder(as_input_of(self.encoder, x))
        # Keeps the latent statistics (and so the KL) in fp32 under bf16 autocast or in a bf16 copy.
        return at_least_fp32(self.mu_head(h)), at_least_fp32(self.logvar_head(h))

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

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """One logit per pixel for latent codes `z` (..., latent_dim) -> (..., D)."""
        flat = z.reshape(-1, z.shape[-1])
        hidden = self.decoder(as_input_of(self.decoder, flat))
        logits = at_least_fp32(self.output(hidden))  # the likelihood in fp32 or fp64
        return logits.reshape(*z.shape[:-1], self.config.input_dim)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The expected image under p(x|z), intensities in (0, 1), for latent codes `z`."""
        return decoder_mean(self.config.likelihood, self.decode_logits(z))

    def log_likelihood(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image in nats, all constants included, from the decoder's logits."""
        return log_likelihood(self.config.likelihood, logits, x, self.log_scale)

    def loss(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        kl_scale: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> LossTerms:
        """The training loss of a batch, per image, with one sample of z per image.

        `noise` (N, latent_dim) replaces the draw of eps from `generator`: distributed ranks pass
        their rows of the whole batch's noise so that they match a single-process run.
        """
        mu, logvar = self.encode(x)
        logits = self.decode_logits(self.reparameterize(mu, logvar, generator, noise))
        return negative_elbo(
            self.config.likelihood, logits, x, mu, logvar, self.log_scale, kl_scale
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Reconstruction (decoder mean of one sampled z) and the posterior's parameters."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return VAEOutput(self.decode(z), mu, logvar)


# 500 million weights take 2 GB in fp32 and 6 GB with Adam's two moments: far past any model of
# these images, and a typo (`hidden=100000000`) is refused before it fills the memory.
MAX_PARAMETERS = 500_000_000


def parameter_count(config: ModelConfig) -> int:
    """How many weights the VAE of `config` has, counted on PyTorch's meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VAE(config).parameters())


def check_model_size(config: ModelConfig) -> None:
    """Refuse a model of more than MAX_PARAMETERS weights."""
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise VaelabError(
            f"the model would have {count:,} weights (hidden {list(config.hidden)}, latent_dim "
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
