"""How good a model is: test-set loss in training units, the negative ELBO in nats, and the
importance-weighted estimate of -log p(x) (IWAE, Burda et al. 2015)."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import torch
from tqdm import tqdm

from vaelab._io import atomic_write_text
from vaelab.config import check_seed
from vaelab.data.dataset import as_unit_images
from vaelab.errors import VaelabError
from vaelab.models import VAE, evaluating
from vaelab.models.likelihoods import gaussian_constant
from vaelab.models.priors import held_prior
from vaelab.rundir import (
    EVAL_FILE,
    WEIGHTS_FILE,
    loaded_weights_sha256,
    run_lock,
    weights_sha256,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

EVAL_SEED = 12345


@dataclass(frozen=True)
class Metrics:
    """Per-image means over a split: the training loss and its reconstruction and KLD parts, in
    the tutorial's units for 'tutorial-mse' and in nats for the other likelihoods."""

    loss: float
    reconstruction: float
    kld: float
    images: int
    likelihood: str = "tutorial-mse"

    def negative_elbo_nats(self, input_dim: int) -> float:
        """The negative ELBO in nats: for 'tutorial-mse' the loss plus the Gaussian decoder's
        constant (D/2) log(2 pi); the other likelihoods' losses already include theirs."""
        if self.likelihood == "tutorial-mse":
            return self.loss + gaussian_constant(input_dim)
        return self.loss


@torch.no_grad()
def evaluate(
    model: VAE,
    images: torch.Tensor,
    batch_size: int = 1000,
    seed: int = EVAL_SEED,
    labels: torch.Tensor | None = None,
) -> Metrics:
    """Mean loss (the negative ELBO, one sample of z per image) over `images` in batches, z
    drawn from a fixed seed; `labels` are the classes a conditional model needs.

    The fixed seed makes the number repeatable and lets epochs be compared on the same noise.
    """
    images = as_unit_images(images)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            terms = model.loss(batch, generator, labels=_rows(labels, start, batch_size, device))
            totals += torch.stack(terms).double() * len(batch)
    loss, reconstruction, kld = (totals / max(len(images), 1)).tolist()
    return Metrics(loss, reconstruction, kld, len(images), model.config.likelihood)


def _rows(
    labels: torch.Tensor | None, start: int, count: int, device: torch.device
) -> torch.Tensor | None:
    return None if labels is None else labels[start : start + count].to(device)


# --- Importance-weighted log-likelihood ------------------------------------------------------

DEFAULT_IW_SAMPLES = 5000
DEFAULT_MAX_MEMORY = 1 << 30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
# Decoder-output-sized temporaries alive at once while a chunk's log-likelihood is computed.
_TEMPORARIES_PER_PIXEL = 8


class Estimate(NamedTuple):
    """A mean over images and its standard error (spread over images / sqrt(images))."""

    mean: float
    stderr: float


class PerImage(NamedTuple):
    """Per-image values in nats, float64: IWAE -log p(x), E_q[-log p(x|z)], KL(q || p)."""

    iwae_nll: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


@dataclass(frozen=True)
class LikelihoodReport:
    """What `vaelab evaluate` writes to RUN/eval.json: per-image means in nats."""

    likelihood: str
    images: int
    negative_elbo_nats: float
    reconstruction_nats: float
    kl_nats: float
    iw_samples: int
    iwae_nll_nats: float
    iwae_stderr_nats: float
    seed: int
    seconds: float
    conditional: bool = False  # the numbers are of -log p(x|y), each image under its class


def parse_size(text: str | int) -> int:
    """Bytes from '1GB', '512MiB', '2g' or a plain number (kB/MB/GB are powers of 1000)."""
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise VaelabError(
                f"max_memory {text!r}: expected a number with a unit, like 1GB",
                parameters=("max_memory",),
            )
        number, unit, binary = match.groups()
        power = "kmgt".find(unit.lower()) + 1 if unit else 0
        size = int(float(number) * (1024 if binary else 1000) ** power)
    if size <= 0:
        raise VaelabError(f"max_memory {text!r} must be above 0", parameters=("max_memory",))
    return size


def _decoder_floats(model: VAE) -> int:
    """Floats the decoder keeps per latent sample: every layer's output, counted by a probe (for
    a hierarchical model, of every network a sample passes through, the encoder's included)."""
    counts: list[int] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: counts.append(out.numel()))
        for module in model.modules()
        if not list(module.children())
    ]
    try:
        parameter = next(model.parameters())
        label = torch.zeros(1, dtype=torch.long, device=parameter.device)
        if model.noise_dim > model.config.latent_dim:
            # two stochastic layers: q(z1|x, z2) and p(z1|z2) also run once per sample
            noise = parameter.new_zeros(1, 1, model.noise_dim)
            model.importance_terms(parameter.new_zeros(1, model.config.input_dim), noise)
        else:
            model.decode_logits(
                parameter.new_zeros(1, model.config.latent_dim),
                label if model.config.conditional else None,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counts)


def _prior_floats(model: VAE) -> int:
    """Floats a mixture prior keeps per latent sample: a log-density per component, in float64
    (two floats each), for its three temporaries."""
    return 0 if model.config.prior == "gaussian" else 6 * model.config.components


def plan_chunks(model: VAE, images: int, k: int, max_memory: int) -> tuple[int, int]:
    """(images per batch, samples per chunk) whose decoder work fits in `max_memory` bytes."""
    element = next(model.parameters()).element_size()
    floats = (
        _decoder_floats(model)
        + _TEMPORARIES_PER_PIXEL * model.config.input_dim
        + _prior_floats(model)
    )
    pair_bytes = element * floats + 8 * 4  # plus the float64 weights of each pair
    pairs = max_memory // pair_bytes
    if pairs < 1:
        raise VaelabError(
            f"max_memory {max_memory} bytes is below what one sample needs ({pair_bytes} bytes)",
            parameters=("max_memory",),
        )
    batch = max(1, min(images, pairs // k))
    return batch, max(1, min(k, pairs // batch))


def _batch_bounds(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> PerImage:
    """IWAE -log p(x) with k samples, and the ELBO's parts, for one batch of images.

    The KL part is in closed form where the model has one, else the mean of log q - log p over
    the same k samples.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    log_sum = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    log_px_z_sum = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    log_ratio_sum = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for start in range(0, k, chunk):
        eps = torch.randn(
            (min(chunk, k - start), len(x), model.noise_dim),
            generator=generator,
            device=x.device,
            dtype=dtype,
        )
        terms = model.importance_terms(x, eps, labels, precise=True)
        log_ratio = terms.log_pz - terms.log_qz
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(terms.log_px_z + log_ratio, dim=0))
        log_px_z_sum += terms.log_px_z.sum(0)
        log_ratio_sum += log_ratio.sum(0)
    kl = model.kl_divergence(x, labels) if model.closed_form_kl else -log_ratio_sum / k
    return PerImage(-(log_sum - math.log(k)), -log_px_z_sum / k, kl)


@torch.no_grad()
def importance_weighted(
    model: VAE,
    images: torch.Tensor,
    k: int = DEFAULT_IW_SAMPLES,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    seed: int = EVAL_SEED,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> PerImage:
    """Per-image IWAE estimates of -log p(x) with `k` samples from q(z|x), and the ELBO's parts
    (-log p(x|y) for a conditional model, given the images' `labels`).

    log p(x) ~ log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); the log-sum-exp runs in
    float64 over chunks of samples. Images and samples are batched so that the decoder's work
    stays under `max_memory` bytes. The same seed, k, max_memory and device give the same numbers.
    """
    if k < 1:
        raise VaelabError(f"k (importance samples) must be at least 1, got {k}", parameters=("k",))
    if len(images) == 0:
        raise VaelabError("there are no images to evaluate")
    check_seed(seed)
    images = as_unit_images(images)
    parameter = next(model.parameters())
    batch, chunk = plan_chunks(model, len(images), k, parse_size(max_memory))
    generator = torch.Generator(device=parameter.device).manual_seed(seed)
    parts: list[PerImage] = []
    bar = tqdm(total=len(images), desc=f"IWAE k={k}", unit="img", disable=not progress)
    with bar, evaluating(model), held_prior(model.prior, model.top_posterior):
        for start in range(0, len(images), batch):
            x = images[start : start + batch].to(parameter.device, parameter.dtype)
            rows = _rows(labels, start, batch, parameter.device)
            parts.append(_batch_bounds(model, x.reshape(len(x), -1), k, chunk, generator, rows))
            bar.update(len(x))
    return PerImage(*(torch.cat(column).cpu() for column in zip(*parts)))


def estimate(values: torch.Tensor) -> Estimate:
    """The mean of per-image `values` and its standard error."""
    stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return Estimate(values.mean().item(), stderr)


class SamplingOptions(TypedDict, total=False):
    """`importance_weighted`'s options after k, by name."""

    max_memory: int | str
    seed: int
    progress: bool
    labels: torch.Tensor | None


def evaluate_likelihood(
    model: VAE,
    images: torch.Tensor,
    k: int = DEFAULT_IW_SAMPLES,
    **options: Unpack[SamplingOptions],
) -> LikelihoodReport:
    """Negative ELBO (reconstruction from the same k samples, KL in closed form) and IWAE.

    `options` are `importance_weighted`'s: max_memory, seed, progress, and the labels a
    conditional model needs (its numbers are then of -log p(x|y)).
    """
    started = time.perf_counter()
    seed = options.get("seed", EVAL_SEED)
    per_image = importance_weighted(model, images, k, **options)
    iwae = estimate(per_image.iwae_nll)
    reconstruction, kl = per_image.reconstruction.mean().item(), per_image.kl.mean().item()
    return LikelihoodReport(
        likelihood=model.config.likelihood,
        images=len(images),
        negative_elbo_nats=reconstruction + kl,
        reconstruction_nats=reconstruction,
        kl_nats=kl,
        iw_samples=k,
        iwae_nll_nats=iwae.mean,
        iwae_stderr_nats=iwae.stderr,
        seed=seed,
        seconds=time.perf_counter() - started,
        conditional=model.config.conditional,
    )


def save_eval(run_dir: str | Path, report: LikelihoodReport) -> Path:
    """Write RUN/eval.json atomically, holding the run's lock; returns its path.

    When the run has weights, eval.json records their SHA-256 (`weights_sha256`), so that the
    report never shows these numbers beside other weights; weights that changed on disk since
    they were loaded for this evaluation are refused.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        payload: dict[str, object] = dict(asdict(report))
        weights = run_dir / WEIGHTS_FILE
        if weights.is_file():
            current = weights_sha256(run_dir)
            loaded = loaded_weights_sha256(run_dir)
            if loaded is not None and loaded != current:
                raise VaelabError(
                    f"{weights}: changed while it was being evaluated (another run wrote it); "
                    "evaluate it again"
                )
            payload["weights_sha256"] = current
        path = run_dir / EVAL_FILE
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
