"""Whether a model learned to use its latent code: the KL of q(z|x) against the prior in each
latent dimension, the active units (Burda et al. 2016), and how much the reconstructions differ
from image to image. A posterior that collapsed (the code says nothing about the image, every
reconstruction is the same average image) is told in one line with its likely causes.

The figures are means over the images given (the test set): a reader can check each one against
its threshold, which the constants below name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab._io import parse_json, read_bytes
from vaelab.config import TrainConfig
from vaelab.data.images import Images, as_readable, read_rows
from vaelab.errors import VaelabError
from vaelab.evaluation import EVAL_SEED
from vaelab.models import VAE, HierarchicalVAE, evaluating
from vaelab.models.bounds import LOG_2PI
from vaelab.models.likelihoods import decoder_mean
from vaelab.models.priors import MixturePrior, held_prior
from vaelab.rundir import EVAL_FILE, load_run_info, weights_sha256

# Burda et al. (2016): dimension d is active when Var_x E_q[z_d|x] exceeds 0.01.
ACTIVE_VARIANCE = 0.01
# Reconstructions are "nearly all the same image" when their per-pixel variance across images,
# averaged over pixels, is below this fraction of the data's own.
SPREAD_FRACTION = 0.05
# An epoch of fewer optimizer steps than this is "a handful"; a run of fewer steps in all than
# ENOUGH_STEPS gets a note at its start.
FEW_STEPS_PER_EPOCH = 20
ENOUGH_STEPS = 5000
# Samples of z per image for the per-dimension KL against a mixture prior (no closed form).
KL_SAMPLES = 16
_MIXTURE_BATCH = 256  # images per block of that estimate: (samples, images, components) floats
_RECORD_BYTES = 1 << 20  # eval.json as vaelab writes it is a few kB
# Under a Gaussian of variance 1 an image of few pixels in [0, 1] gains less from a code than the
# code costs: scikit-learn's 8x8 digits collapsed after 4,800 steps with it, not with bernoulli
# or gaussian (docs/evaluation.md).
_TUTORIAL_MSE_CAUSE = (
    "the likelihood (tutorial-mse is a Gaussian of variance 1, under which small images gain "
    "less from a code than it costs: try bernoulli or gaussian)"
)


@dataclass(frozen=True)
class PosteriorDiagnosis:
    """What the latent code carries, measured over `images` images.

    `kl_per_dim` is the mean over images of KL(q(z_d|x) || p(z_d)) in nats for each latent
    dimension (for two stochastic layers: z2's, then z1's against p(z1|z2) at z2's mean);
    `mean_variance_per_dim` the variance over images of the posterior mean E_q[z_d|x];
    `reconstruction_spread` and `data_spread` the per-pixel variance across images, averaged over
    pixels, of the reconstructions (decoded from the posterior means) and of the images.
    """

    images: int
    kl_per_dim: tuple[float, ...]
    mean_variance_per_dim: tuple[float, ...]
    reconstruction_spread: float
    data_spread: float

    @property
    def active_units(self) -> int:
        """Dimensions whose posterior mean varies over the images by more than ACTIVE_VARIANCE."""
        return sum(variance > ACTIVE_VARIANCE for variance in self.mean_variance_per_dim)

    @property
    def kl_nats(self) -> float:
        """The KL summed over the dimensions (nats per image)."""
        return math.fsum(self.kl_per_dim)

    @property
    def spread_ratio(self) -> float:
        """The reconstructions' spread over the data's (NaN when the images are all the same)."""
        return self.reconstruction_spread / self.data_spread if self.data_spread > 0 else math.nan

    @property
    def outputs_alike(self) -> bool:
        """Whether the reconstructions are nearly all the same image."""
        return self.spread_ratio < SPREAD_FRACTION  # False for NaN

    @property
    def collapsed(self) -> bool:
        """No latent dimension is active, or every reconstruction is nearly the same image."""
        return self.active_units == 0 or self.outputs_alike

    def to_dict(self) -> dict[str, Any]:
        """The figures as eval.json and config.json record them, the derived ones included."""
        return {
            **asdict(self),
            "kl_per_dim": list(self.kl_per_dim),
            "mean_variance_per_dim": list(self.mean_variance_per_dim),
            "active_units": self.active_units,
            "latent_dims": len(self.kl_per_dim),
            "kl_nats": self.kl_nats,
            "spread_ratio": None if math.isnan(self.spread_ratio) else self.spread_ratio,
            "collapsed": self.collapsed,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> PosteriorDiagnosis | None:
        """The diagnosis a file recorded with `to_dict`, or None when it is not one."""
        if not isinstance(raw, dict):
            return None
        kl, variance = raw.get("kl_per_dim"), raw.get("mean_variance_per_dim")
        images = raw.get("images")
        if not (isinstance(kl, list) and isinstance(variance, list) and len(kl) == len(variance)):
            return None
        if not isinstance(images, int) or isinstance(images, bool):
            return None
        numbers = [_number(v) for v in (*kl, *variance)]
        spreads = _number(raw.get("reconstruction_spread")), _number(raw.get("data_spread"))
        known = [v for v in (*numbers, *spreads) if v is not None]
        if len(known) != len(numbers) + 2:
            return None
        return cls(images, tuple(known[: len(kl)]), tuple(known[len(kl) : -2]), *known[-2:])


def _number(value: Any) -> float | None:
    """`value` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@torch.no_grad()
def diagnose_posterior(
    model: VAE,
    images: Images | torch.Tensor,
    batch_size: int = 1000,
    labels: torch.Tensor | None = None,
    seed: int = EVAL_SEED,
) -> PosteriorDiagnosis:
    """Per-dimension KL, active units and the spread of the reconstructions over `images`.

    The KL is in closed form against N(0, I), estimated from KL_SAMPLES samples of z per image
    (seeded) against each dimension's marginal of a mixture prior; `labels` are the classes a
    conditional model needs. The work runs in batches of `batch_size` images.
    """
    images = as_readable(images)
    if len(images) == 0:
        raise VaelabError("there are no images to diagnose")
    if batch_size < 1:
        raise VaelabError(
            f"batch_size must be at least 1, got {batch_size}", parameters=("batch_size",)
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = _Sums()
    with evaluating(model), held_prior(model.prior, model.top_posterior):
        for start in range(0, len(images), batch_size):
            x = read_rows(images, slice(start, start + batch_size), device)
            x = x.reshape(len(x), -1).to(next(model.parameters()).dtype)
            rows = None if labels is None else labels[start : start + batch_size].to(device)
            means, kl, recon = _batch_terms(model, x, rows, generator)
            sums.add(means, kl, recon, x)
    return sums.diagnosis()


class _Sums:
    """Running float64 sums over batches: per dimension of the posterior means and their squares
    and of the KL; per pixel of the reconstructions and images and their squares."""

    def __init__(self) -> None:
        self.count = 0
        self.totals: dict[str, torch.Tensor] = {}

    def add(
        self, means: torch.Tensor, kl: torch.Tensor, recon: torch.Tensor, x: torch.Tensor
    ) -> None:
        self.count += len(x)
        for name, values in (("mean", means), ("kl", kl), ("recon", recon), ("data", x)):
            values = values.double()
            self._add(name, values.sum(0))
            if name != "kl":
                self._add(f"{name}_sq", values.square().sum(0))

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.totals[name] = self.totals[name] + value if name in self.totals else value

    def _variance(self, name: str) -> torch.Tensor:
        mean = self.totals[name] / self.count
        return (self.totals[f"{name}_sq"] / self.count - mean.square()).clamp_min(0)

    def diagnosis(self) -> PosteriorDiagnosis:
        return PosteriorDiagnosis(
            images=self.count,
            kl_per_dim=tuple((self.totals["kl"] / self.count).cpu().tolist()),
            mean_variance_per_dim=tuple(self._variance("mean").cpu().tolist()),
            reconstruction_spread=float(self._variance("recon").mean()),
            data_spread=float(self._variance("data").mean()),
        )


def _batch_terms(
    model: VAE, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior means (N, dims), per-dimension KL (N, dims) and reconstructions (N, D)."""
    mu, logvar = model.encode(x, labels)
    kl = _kl_to_prior(model, mu, logvar, generator)
    if not isinstance(model, HierarchicalVAE):
        return mu, kl, model.decode(mu, labels)
    mu1, logvar1 = model.q_z1(model.q1_x(x), mu)
    prior_mu1, prior_logvar1 = model.p_z1(mu)
    kl1 = _gaussian_kl(mu1, logvar1, prior_mu1, prior_logvar1)
    recon = decoder_mean(model.config.likelihood, model.p_x_logits(mu1, mu))
    return torch.cat([mu, mu1], -1), torch.cat([kl, kl1], -1), recon


def _kl_to_prior(
    model: VAE, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """KL(q(z_d|x) || p(z_d)) per image and dimension of the latent the prior is on."""
    if not isinstance(model.prior, MixturePrior):
        return _gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
    means, logvars = model.prior.components(model.top_posterior)
    parts = [
        _sampled_marginal_kl(mu[rows], logvar[rows], means, logvars, generator)
        for rows in (slice(s, s + _MIXTURE_BATCH) for s in range(0, len(mu), _MIXTURE_BATCH))
    ]
    return torch.cat(parts)


def _gaussian_kl(
    mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor, prior_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) per coordinate, float64."""
    mu, logvar, prior_mu, prior_logvar = (t.double() for t in (mu, logvar, prior_mu, prior_logvar))
    ratio = torch.exp(logvar - prior_logvar)
    return 0.5 * (ratio + (mu - prior_mu).square() / prior_logvar.exp() - 1 - logvar + prior_logvar)


def _sampled_marginal_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    means: torch.Tensor,
    logvars: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """E_q[log q(z_d|x) - log p(z_d)] per image and dimension, p(z_d) the mixture's marginal in
    dimension d (a mixture of K one-dimensional Gaussians), from KL_SAMPLES samples of z."""
    mu, logvar, means, logvars = (t.double() for t in (mu, logvar, means, logvars))
    eps = torch.randn(
        (KL_SAMPLES, *mu.shape), generator=generator, device=mu.device, dtype=torch.float64
    )
    z = mu + eps * torch.exp(0.5 * logvar)
    log_q = -0.5 * (eps.square() + logvar + LOG_2PI)
    log_p = torch.empty_like(z)
    for d in range(mu.shape[-1]):  # one dimension at a time: (S, N, K) floats, not (S, N, K, D)
        centred = z[..., d, None] - means[:, d]
        per_component = -0.5 * (centred.square() * torch.exp(-logvars[:, d]) + logvars[:, d])
        log_p[..., d] = torch.logsumexp(per_component, -1) - math.log(len(means)) - 0.5 * LOG_2PI
    return (log_q - log_p).mean(0)


# --- What is said ----------------------------------------------------------------------------


def few_steps_note(train_images: int, batch_size: int, epochs: int) -> str | None:
    """A note for the start of training when an epoch is only a handful of optimizer steps and
    the run is far from the thousands a VAE usually needs; None otherwise."""
    per_epoch = train_images // batch_size
    total = per_epoch * epochs
    if per_epoch >= FEW_STEPS_PER_EPOCH or total >= ENOUGH_STEPS:
        return None
    return (
        f"note: an epoch is only {_count(per_epoch, 'optimizer step')} ({train_images:,} "
        f"training images in batches of {batch_size}), {_count(total, 'step')} in all; a VAE "
        "usually needs thousands of steps to learn a latent code: give more epochs or a smaller "
        "batch size"
    )


def collapse_warning(
    diagnosis: PosteriorDiagnosis,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    likelihood: str | None = None,
) -> str | None:
    """One line that says the posterior collapsed, with the figures that show it and the likely
    causes and remedies; None when it did not. The run's steps and the decoder's `likelihood`,
    when given, are named."""
    if not diagnosis.collapsed:
        return None
    causes = [
        _steps_cause(steps_per_epoch, epochs),
        *([_TUTORIAL_MSE_CAUSE] if likelihood == "tutorial-mse" else []),
        "a KL term that pulls q(z|x) onto the prior before the decoder learns to use z (a KL "
        "warm-up over a few epochs helps)",
        "a learning rate too high (or too low to get anywhere)",
        "a beta above 1",
    ]
    what = (
        "the latent code carries next to nothing about the images"
        if diagnosis.active_units == 0
        else "the reconstructions are nearly all the same image: the decoder does not use the code"
    )
    return (
        f"warning: posterior collapse: {describe(diagnosis)}; {what}. Likely causes: "
        f"{'; '.join(causes)}"
    )


def describe(diagnosis: PosteriorDiagnosis) -> str:
    """The figures in a few words: active units, KL, and the reconstructions' spread."""
    dims = len(diagnosis.kl_per_dim)
    ratio = diagnosis.spread_ratio
    spread = "n/a" if math.isnan(ratio) else f"{100 * ratio:.1f}% of the images'"
    return (
        f"{diagnosis.active_units} of {dims} latent dimensions active, KL "
        f"{diagnosis.kl_nats:.3f} nats per image, reconstruction spread {spread}"
    )


def planned_steps(train: TrainConfig, info: Mapping[str, Any]) -> tuple[int | None, int]:
    """(optimizer steps per epoch, epochs) of a saved run, from its config and the training
    images config.json records (steps per epoch None where it records none)."""
    dataset = info.get("dataset")
    images = dataset.get("train_images") if isinstance(dataset, Mapping) else None
    if not isinstance(images, int) or isinstance(images, bool):
        return None, train.epochs
    return images // train.batch_size, train.epochs


def recorded_posterior(run_dir: str | Path) -> PosteriorDiagnosis | None:
    """The diagnosis recorded for a run's current weights: eval.json's (`vaelab evaluate`),
    else config.json's (the end of training); None when neither records one of these weights."""
    run_dir = Path(run_dir)
    try:
        current = weights_sha256(run_dir)
        evaluation = _json_object(run_dir / EVAL_FILE)
        trained = load_run_info(run_dir).get("posterior")
    except VaelabError:
        return None
    trained = trained if isinstance(trained, dict) else {}
    records = ((evaluation.get("weights_sha256"), evaluation.get("posterior")),
               (trained.get("weights_sha256"), trained))  # fmt: skip
    for weights, record in records:
        found = PosteriorDiagnosis.from_dict(record) if weights == current else None
        if found is not None:
            return found
    return None


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (at most _RECORD_BYTES); empty when there is no file."""
    if not path.is_file():
        return {}
    raw = parse_json(read_bytes(path, "a JSON file", _RECORD_BYTES), path)
    return raw if isinstance(raw, dict) else {}


def _steps_cause(steps_per_epoch: int | None, epochs: int | None) -> str:
    if steps_per_epoch is None or epochs is None:
        return "too few optimizer steps for the dataset (more epochs or a smaller batch size)"
    return (
        f"too few optimizer steps ({steps_per_epoch} per epoch, {steps_per_epoch * epochs:,} in "
        "all; a VAE usually needs thousands: more epochs or a smaller batch size)"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
