"""The hierarchical VAE with two stochastic layers of the VampPrior paper (Tomczak & Welling
2018): z2 -> z1 -> x, with

    generative model   p(z2) p(z1|z2) p(x|z1, z2)
    inference model    q(z2|x) q(z1|x, z2)

The prior on z2 is the config's (N(0, I) or the VampPrior, whose components are q(z2|u_k)).
The MLP version ('mlp' or 'gated') builds every network from the config's `hidden` widths; the
conv version is the paper's ConvHVAE: gated convolutions read x in q(z2|x) and q(z1|x, z2), and
p(x|z1, z2) maps a gated dense layer to a full-size map refined by four gated 3x3 convolutions.
z2 is the latent of the figures and the explorer; decoding a code z2 uses the mean of p(z1|z2).
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.models.bounds import (
    ImportanceTerms,
    log_normal_diag,
    log_posterior_of_noise,
)
from vaelab.models.layers import GatedConv2d, GatedDense, LogVarianceHead, he_init
from vaelab.models.networks import (
    PadTo,
    as_input_of,
    at_least_fp32,
    dense_stack,
    padded_side,
)
from vaelab.models.vae import VAE

CONV_DENSE = 300  # the ConvHVAE's dense width
CONV_DECODER_CHANNELS = 64


class HierarchicalVAE(VAE):
    """A VAE with two stochastic layers, z2 (top, under the prior) and z1, each of latent_dim."""

    def _build_networks(self) -> None:
        config = self.config
        latent = config.latent_dim
        if config.arch == "conv":
            self._build_conv_networks()
        else:
            arch, hidden = config.arch, list(config.hidden)
            first, last = hidden[0], hidden[-1]
            # q(z2|x)
            self.encoder = dense_stack(arch, [config.input_dim, *hidden])
            self.mu_head, self.logvar_head = _heads(last, latent)
            # q(z1|x, z2)
            self.q1_x = dense_stack(arch, [config.input_dim, last])
            self.q1_z2 = dense_stack(arch, [latent, last])
            self.q1_joint = dense_stack(arch, [2 * last, last])
            self.q1_mu, self.q1_logvar = _heads(last, latent)
            # p(z1|z2)
            self.p1 = dense_stack(arch, [latent, *reversed(hidden)])
            self.p1_mu, self.p1_logvar = _heads(first, latent)
            # p(x|z1, z2)
            self.px_z1 = dense_stack(arch, [latent, first])
            self.px_z2 = dense_stack(arch, [latent, first])
            self.decoder = dense_stack(arch, [2 * first, first])
            self.output = nn.Linear(first, config.input_dim)
        he_init(self)

    def _build_conv_networks(self) -> None:
        config = self.config
        latent, shape = config.latent_dim, config.shape
        channels, height, width = shape
        padded = (padded_side(height), padded_side(width))
        features = 6 * (padded[0] // 4) * (padded[1] // 4)
        self.encoder = nn.Sequential(
            PadTo(shape, padded),
            *_gated_convs(channels, ((32, 7, 1), (32, 3, 2), (64, 5, 1), (64, 3, 2), (6, 3, 1))),
            nn.Flatten(),
        )
        self.mu_head, self.logvar_head = _heads(features, latent)
        self.q1_x = nn.Sequential(
            PadTo(shape, padded),
            *_gated_convs(channels, ((32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (6, 3, 1))),
            nn.Flatten(),
        )
        self.q1_z2 = nn.Sequential(GatedDense(latent, features))
        self.q1_joint = nn.Sequential(GatedDense(2 * features, CONV_DENSE))
        self.q1_mu, self.q1_logvar = _heads(CONV_DENSE, latent)
        self.p1 = nn.Sequential(GatedDense(latent, CONV_DENSE), GatedDense(CONV_DENSE, CONV_DENSE))
        self.p1_mu, self.p1_logvar = _heads(CONV_DENSE, latent)
        self.px_z1 = nn.Sequential(GatedDense(latent, CONV_DENSE))
        self.px_z2 = nn.Sequential(GatedDense(latent, CONV_DENSE))
        self.decoder = nn.Sequential(
            GatedDense(2 * CONV_DENSE, config.input_dim),
            nn.Unflatten(-1, shape),
            *_gated_convs(channels, ((CONV_DECODER_CHANNELS, 3, 1),) * 4),
        )
        self.output = nn.Sequential(nn.Conv2d(CONV_DECODER_CHANNELS, channels, 1), nn.Flatten())

    @property
    def noise_dim(self) -> int:
        """Standard-normal values per sample: latent_dim for z2, then latent_dim for z1."""
        return 2 * self.config.latent_dim

    @property
    def closed_form_kl(self) -> bool:
        """Never: the KL over two layers is estimated from the sample."""
        return False

    def kl_divergence(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Not in closed form for two stochastic layers."""
        raise NotImplementedError("the hierarchical VAE's KL has no closed form")

    def q_z1(self, x_features: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z1|x, z2) from the x path's features (N, F) and codes z2 (..., N, latent_dim)."""
        from_z2 = self.q1_z2(as_input_of(self.q1_z2, z2))
        joint = torch.cat([x_features.to(from_z2).expand_as(from_z2), from_z2], dim=-1)
        h = self.q1_joint(joint)
        return at_least_fp32(self.q1_mu(h)), at_least_fp32(self.q1_logvar(h))

    def p_z1(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z1|z2): mean and log-variance."""
        h = self.p1(as_input_of(self.p1, z2))
        return at_least_fp32(self.p1_mu(h)), at_least_fp32(self.p1_logvar(h))

    def p_x_logits(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The logits of p(x|z1, z2), (..., input_dim)."""
        lead = z2.shape[:-1]
        z1, z2 = z1.reshape(-1, z1.shape[-1]), z2.reshape(-1, z2.shape[-1])
        h = torch.cat(
            [self.px_z1(as_input_of(self.px_z1, z1)), self.px_z2(as_input_of(self.px_z2, z2))],
            dim=-1,
        )
        logits = at_least_fp32(self.output(self.decoder(h)))
        return logits.reshape(*lead, self.config.input_dim)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of p(x|z1, z2) for top codes z2 (..., latent_dim), z1 the mean of p(z1|z2)."""
        z1_mean, _ = self.p_z1(z)
        return self.p_x_logits(z1_mean, z)

    def importance_terms(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        precise: bool = False,
    ) -> ImportanceTerms:
        """log p(x|z1, z2), log p(z1, z2) and log q(z1, z2|x), each (S, N), with `noise`
        (S, N, 2 * latent_dim): eps of z2, then eps of z1; `precise` in float64."""
        latent = self.config.latent_dim
        mu2, logvar2 = self.encode(x)
        eps2, eps1 = noise[..., :latent].to(mu2.dtype), noise[..., latent:].to(mu2.dtype)
        z2 = mu2 + eps2 * torch.exp(0.5 * logvar2)
        mu1, logvar1 = self.q_z1(self.q1_x(as_input_of(self.q1_x, x)), z2)
        z1 = mu1 + eps1 * torch.exp(0.5 * logvar1)
        prior_mu1, prior_logvar1 = self.p_z1(z2)
        log_px_z = self.log_likelihood(x, self.p_x_logits(z1, z2))
        if precise:
            z1, z2, prior_mu1, prior_logvar1, log_px_z = (
                t.double() for t in (z1, z2, prior_mu1, prior_logvar1, log_px_z)
            )
            eps1, eps2, logvar1, logvar2 = (t.double() for t in (eps1, eps2, logvar1, logvar2))
        log_pz = self.log_prior(z2) + log_normal_diag(z1, prior_mu1, prior_logvar1)
        log_qz = log_posterior_of_noise(eps2, logvar2) + log_posterior_of_noise(eps1, logvar1)
        return ImportanceTerms(log_px_z, log_pz, log_qz)


def _heads(width: int, latent: int) -> tuple[nn.Linear, LogVarianceHead]:
    """A Gaussian's mean head and its bounded log-variance head."""
    return nn.Linear(width, latent), LogVarianceHead(width, latent)


def _gated_convs(channels: int, layers: tuple[tuple[int, int, int], ...]) -> list[nn.Module]:
    """Gated convolutions (out channels, kernel, stride), 'same' padding, from `channels`."""
    convs: list[nn.Module] = []
    for out, kernel, stride in layers:
        convs.append(GatedConv2d(channels, out, kernel, stride, kernel // 2))
        channels = out
    return convs


def build_model(config: ModelConfig) -> VAE:
    """The VAE `config` describes: one stochastic layer or the hierarchical two."""
    return HierarchicalVAE(config) if config.stochastic_layers == 2 else VAE(config)
