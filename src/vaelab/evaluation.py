"""How good a model is: test-set loss in training units, the negative ELBO in nats, and the
importance-weighted estimate of -log p(x) (IWAE, Burda et al. 2015)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import torch
from torch import nn
from tqdm import tqdm

from vaelab._bounds import require_whole
from vaelab._io import atomic_write_text
from vaelab._outputs import check_run_file
from vaelab._resources import require_memory
from vaelab.config import GAUSSIAN_LIKELIHOODS, check_seed
from vaelab.data.images import Images, as_readable, read_rows
from vaelab.errors import VaelabError
from vaelab.models import VAE, evaluating
from vaelab.models.bounds import ImportanceTerms, log_posterior_of_noise
from vaelab.models.likelihoods import (
    gaussian_constant,
    gaussian_scale,
    log_likelihood,
)
from vaelab.models.priors import held_prior
from vaelab.models.products import onednn_linear, uses_onednn
from vaelab.rundir import (
    EVAL_FILE,
    WEIGHTS_FILE,
    loaded_weights_sha256,
    run_lock,
    weights_sha256,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from vaelab.diagnostics import PosteriorDiagnosis

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
    images: Images | torch.Tensor,
    batch_size: int = 1000,
    seed: int = EVAL_SEED,
    labels: torch.Tensor | None = None,
) -> Metrics:
    """Mean loss (the negative ELBO, one sample of z per image) over `images` in batches, z
    drawn from a fixed seed; `labels` are the classes a conditional model needs.

    The fixed seed makes the number repeatable and lets epochs be compared on the same noise.
    """
    require_whole("batch_size", batch_size, 1)
    images = as_readable(images)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            batch = read_rows(images, slice(start, start + batch_size), device)
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
# 200 times the published k: far past any estimate's need, and a typo (k=10**12) is refused
# before an evaluation that would never end is started.
MAX_IW_SAMPLES = 1_000_000
EVAL_PRECISIONS = ("32", "bf16")  # of the fast path's matrix products: see importance_weighted
DEFAULT_MAX_MEMORY = 1 << 30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
# Decoder-output-sized temporaries alive at once while a block's log-likelihood is computed.
_TEMPORARIES_PER_PIXEL = 8
# The decoder and the likelihood run on blocks of (sample, image) pairs whose activations take an
# eighth of the CPU's last-level cache, within these bounds (`_block_bytes`), so that each
# layer's output is still in the cache when the next reads it; blocks of fewer rows than the
# minimum would be dominated by the cost of each call.
_BLOCK_BYTES_RANGE = (4 << 20, 32 << 20)
_MIN_BLOCK_ROWS = 256
# Float64 values per (sample, image) pair alive for a whole chunk: its three log-densities, the
# log-ratio, the log-weight, and the blocks' copies of them (the general path).
_CHUNK_FLOAT64S = 8


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


def _row_bytes(model: VAE) -> int:
    """Bytes one row of a block (one latent sample of one image) takes while it is decoded and
    scored: every decoder layer's output, the likelihood's temporaries and a mixture prior's, in
    the model's dtype."""
    element = next(model.parameters()).element_size()
    floats = (
        _decoder_floats(model)
        + _TEMPORARIES_PER_PIXEL * model.config.input_dim
        + _prior_floats(model)
    )
    return element * floats


def _chunk_pair_bytes(model: VAE) -> int:
    """Bytes each (sample, image) pair of a chunk holds for the whole chunk: its noise (float32
    or wider), its latents and noise again in float64 with as many temporaries, and
    _CHUNK_FLOAT64S log-densities and sums in float64."""
    noise = model.noise_dim * max(next(model.parameters()).element_size(), 4)
    return noise + 8 * (2 * (model.noise_dim + model.config.latent_dim) + _CHUNK_FLOAT64S)


def plan_chunks(model: VAE, images: int, k: int, max_memory: int) -> tuple[int, int]:
    """(images per batch, samples per chunk) whose decoder work fits in `max_memory` bytes.

    A chunk's noise is drawn at once and its (sample, image) pairs are decoded in blocks of at
    most that many pairs (`block_rows`); each pair is counted with what it holds for the whole
    chunk (`_chunk_pair_bytes`) and the bytes it takes in a block (`_row_bytes`), so that the
    chunk and any block of it fit together.
    """
    pair_bytes = _pair_bytes(model)
    pairs = max_memory // pair_bytes
    if pairs < 1:
        raise VaelabError(
            f"max_memory {max_memory} bytes is below what one sample needs ({pair_bytes} bytes)",
            parameters=("max_memory",),
        )
    batch = max(1, min(images, pairs // k))
    return batch, max(1, min(k, pairs // batch))


def _pair_bytes(model: VAE) -> int:
    """Bytes one (sample, image) pair of a chunk holds: in its block and for the whole chunk."""
    return _row_bytes(model) + _chunk_pair_bytes(model)


def block_rows(model: VAE, batch: int, chunk: int) -> int:
    """(sample, image) pairs decoded at once: on the CPU as many as keep the decoder's
    activations within `_block_bytes()` (so that each layer reads its input from the cache) but at
    least _MIN_BLOCK_ROWS, never more than the batch * chunk pairs `plan_chunks` fitted; on
    other devices (whose kernels want the largest products) all of them."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        return batch * chunk
    cached = _block_bytes() // (parameter.element_size() * _decoder_floats(model))
    return max(1, min(batch * chunk, max(_MIN_BLOCK_ROWS, cached)))


def _block_bytes() -> int:
    """The bytes of activations a block of the decoder may take on the CPU: an eighth of the
    last-level cache within `_BLOCK_BYTES_RANGE` (the lower bound where the size is not known).

    On a 2-core AMD EPYC (32 MiB L3) that is 4 MiB; on a 2-core Intel Xeon VM whose L3 is 480
    MiB it is 32 MiB, where k=5000 took 13.7 ms per image against 15.4 ms in 4 MiB blocks
    (docs/speed.md)."""
    from vaelab.training.cpu import last_level_cache_bytes  # vaelab.training imports this module

    low, high = _BLOCK_BYTES_RANGE
    cache = last_level_cache_bytes()
    return low if cache is None else max(low, min(high, cache // 8))


def _blocks(samples: int, images: int, rows: int) -> Iterator[tuple[slice, slice]]:
    """(samples, images) slices that tile a samples x images chunk with blocks of at most `rows`
    pairs: all images of the chunk at once where `rows` allows, else `rows` images at a time."""
    width = min(images, rows)
    depth = max(1, rows // width)
    for first_image in range(0, images, width):
        for first_sample in range(0, samples, depth):
            yield (
                slice(first_sample, first_sample + depth),
                slice(first_image, first_image + width),
            )


def _batch_bounds(
    model: VAE,
    x: torch.Tensor,
    k: int,
    chunk: int,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    rows: int | None = None,
    decoder: FastDecoder | None = None,
) -> PerImage:
    """IWAE -log p(x) with k samples, and the ELBO's parts, for one batch of images.

    The noise is drawn a chunk of samples at a time and decoded in blocks of `rows` pairs (the
    whole chunk when None), through `decoder` where the fast path applies, else through the
    model's `importance_terms`. The KL part is in closed form where the model has one, else the
    mean of log q - log p over the same k samples.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    log_sum = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    log_px_z_sum = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    log_ratio_sum = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    terms_of = (
        _GeneralTerms(model, x, labels, rows)
        if decoder is None
        else _FastTerms(model, decoder, x, labels, rows)
    )
    for start in range(0, k, chunk):
        eps = torch.randn(
            (min(chunk, k - start), len(x), model.noise_dim),
            generator=generator,
            device=x.device,
            dtype=dtype,
        )
        terms = terms_of(eps)
        log_ratio = terms.log_pz - terms.log_qz
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(terms.log_px_z + log_ratio, dim=0))
        log_px_z_sum += terms.log_px_z.sum(0)
        log_ratio_sum += log_ratio.sum(0)
    kl = model.kl_divergence(x, labels) if model.closed_form_kl else -log_ratio_sum / k
    return PerImage(-(log_sum - math.log(k)), -log_px_z_sum / k, kl)


class _GeneralTerms:
    """A batch's importance terms, each (S, N) in float64, for a chunk of noise (S, N,
    noise_dim): the model's `importance_terms` on each block of `rows` pairs (the general path,
    for any model)."""

    def __init__(
        self, model: VAE, x: torch.Tensor, labels: torch.Tensor | None, rows: int | None
    ) -> None:
        self.model, self.x, self.labels, self.rows = model, x, labels, rows

    def __call__(self, noise: torch.Tensor) -> ImportanceTerms:
        samples, images = noise.shape[:2]
        if self.rows is None or self.rows >= samples * images:
            return self.model.importance_terms(self.x, noise, self.labels, precise=True)
        out = ImportanceTerms(
            *(noise.new_empty((samples, images), dtype=torch.float64) for _ in range(3))
        )
        for rows, columns in _blocks(samples, images, self.rows):
            labels = None if self.labels is None else self.labels[columns]
            block = self.model.importance_terms(
                self.x[columns], noise[rows, columns], labels, precise=True
            )
            for whole, part in zip(out, block):
                whole[rows, columns] = part
        return out


class _FastTerms:
    """A batch's importance terms for a chunk of noise through a `FastDecoder` on blocks of
    `rows` pairs: the values of `VAE.importance_terms(..., precise=True)`, to rounding, with the
    batch encoded once."""

    def __init__(
        self,
        model: VAE,
        decoder: FastDecoder,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        rows: int | None,
    ) -> None:
        self.model, self.decoder, self.x, self.labels = model, decoder, x, labels
        self.rows = rows or decoder.rows
        mu, logvar = model.encode(x, labels)
        self.mu, self.std, self.logvar = mu, torch.exp(0.5 * logvar), logvar.double()

    def __call__(self, noise: torch.Tensor) -> ImportanceTerms:
        eps = noise.to(self.mu.dtype)
        z = self.mu + eps * self.std
        log_px_z = z.new_empty(z.shape[:2], dtype=torch.float64)
        samples, images = z.shape[:2]
        for rows, columns in _blocks(samples, images, self.rows):
            labels = None if self.labels is None else self.labels[columns]
            codes = self.model.conditioned(z[rows, columns], labels)
            log_px_z[rows, columns] = self.decoder.log_likelihood(codes, self.x[columns])
        return ImportanceTerms(
            log_px_z,
            self.model.log_prior(z.double()),
            log_posterior_of_noise(eps.double(), self.logvar),
        )


# --- The decoder's fast path -----------------------------------------------------------------
# IWAE's cost is almost all the decoder run on k samples per image. For an MLP decoder the fast
# path runs it on blocks of rows small enough for the caches, with no module calls: each layer
# one matrix product with its bias and ReLU fused (oneDNN's linear primitive for float32 on the
# CPU, which reaches about twice MKL's rate on AMD CPUs, see `vaelab.models.products`; else
# torch.addmm into a buffer kept across blocks, then the ReLU in place), and the likelihood's
# sum over pixels computed in place on the last layer's output (for the Gaussian likelihoods
# with the sigmoid fused into that layer) instead of through several output-sized temporaries.

_MEAN_LIKELIHOODS = ("tutorial-mse", *GAUSSIAN_LIKELIHOODS)  # they read sigmoid(logits)
_FAST_CLASS_METHODS = ("importance_terms", "decode_logits", "log_likelihood", "conditioned")


def fast_decoder(model: VAE, rows: int, precision: str = "32") -> FastDecoder | None:
    """The decoder's fast path for `model`, with buffers for blocks of `rows` rows, its
    products in `precision` ('32', or 'bf16': see `importance_weighted`), or None where the
    general path (the model's `importance_terms`) runs.

    It applies to a VAE whose importance terms, decoder and likelihood are the VAE class's own
    (neither the hierarchical model nor a subclass that changes them) and whose decoder is
    plain Linear layers each followed by a ReLU, then a Linear output layer ('mlp'), all of
    them float32 or float64 and without hooks. Every likelihood, prior and conditioning runs on
    it; 'tutorial-mse', the Gaussians and 'bernoulli' also sum their log-density in place.
    """
    if not isinstance(model, VAE) or any(
        getattr(type(model), name) is not getattr(VAE, name) for name in _FAST_CLASS_METHODS
    ):
        return None
    stack = list(model.decoder) if isinstance(model.decoder, nn.Sequential) else []
    layers = [layer for layer in (*stack[0::2], model.output) if type(layer) is nn.Linear]
    if (
        not stack
        or len(stack) % 2
        or len(layers) != len(stack) // 2 + 1
        or any(type(activation) is not nn.ReLU for activation in stack[1::2])
    ):
        return None
    modules = [model.decoder, *stack, model.output]
    if any(module._forward_hooks or module._forward_pre_hooks for module in modules):
        return None
    dtypes = {parameter.dtype for layer in layers for parameter in layer.parameters()}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
        return None
    if model.config.likelihood in GAUSSIAN_LIKELIHOODS and model.log_scale is None:
        return None  # the general path says what is missing
    return FastDecoder(model, layers, rows, torch.bfloat16 if precision == "bf16" else None)


class FastDecoder:
    """log p(x|z) of `model`'s MLP decoder, the Linear `layers` (each but the last followed by a
    ReLU), for blocks of decoder inputs, without autograd or module calls, buffers sized for
    blocks of `rows` rows; `fast_decoder` says where it applies. With a `low` dtype (bf16) the
    products run in it, from copies of the weights, and the logits are widened to the model's
    dtype for the likelihood."""

    def __init__(
        self, model: VAE, layers: list[nn.Linear], rows: int, low: torch.dtype | None = None
    ) -> None:
        self.layers = [
            (_low(layer.weight, low), None if layer.bias is None else _low(layer.bias, low))
            for layer in layers
        ]
        self.dtype = layers[0].weight.dtype  # the likelihood's
        self.group = _product_group(model.config.input_dim, self.dtype)  # for 'bernoulli'
        self.rows = rows
        self.likelihood = model.config.likelihood
        self.log_scale = model.log_scale
        self.sigmoid = self.likelihood in _MEAN_LIKELIHOODS
        self.buffers: dict[int, torch.Tensor] = {}
        # The Gaussians' scale, and the constant of their log-density and the tutorial's:
        # (D/2) log(2 pi) + sum(log scale).
        self.scale: torch.Tensor | None = None
        input_dim = model.config.input_dim
        self.constant = gaussian_constant(input_dim)
        if self.likelihood in GAUSSIAN_LIKELIHOODS and model.log_scale is not None:
            self.scale = gaussian_scale(model.log_scale.detach())
            self.constant += float(torch.log(self.scale).expand(input_dim).sum())

    def log_likelihood(self, codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) (S, N) for decoder inputs `codes` (S, N, inputs) and images `x` (N, D)."""
        samples, images = codes.shape[:2]
        weight = self.layers[0][0]
        h = codes.reshape(-1, codes.shape[-1]).to(weight.dtype)
        last = len(self.layers) - 1
        for index in range(last):
            h = self._layer(index, h, "relu")
        if h.dtype == self.dtype:
            out = self._layer(last, h, "sigmoid" if self.sigmoid else "none")
        else:  # the likelihood reads the logits in the model's dtype
            out = self._layer(last, h, "none").to(self.dtype)
            if self.sigmoid:
                out.sigmoid_()
        return self._summed(out.view(samples, images, -1), x)

    def _layer(self, index: int, h: torch.Tensor, activation: str) -> torch.Tensor:
        weight, bias = self.layers[index]
        if uses_onednn(h, weight, bias is not None):
            return onednn_linear(h, weight, bias, activation)
        out = self._buffer(index, len(h), weight.shape[0], weight.dtype)
        if bias is None:
            torch.mm(h, weight.t(), out=out)
        else:
            torch.addmm(bias, h, weight.t(), out=out)
        if activation == "relu":
            out.relu_()
        elif activation == "sigmoid":
            out.sigmoid_()
        return out

    def _buffer(self, key: int, rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """The first `rows` rows of buffer `key` (a layer's index for its output, -1 for the
        likelihood's scratch), made on first use and kept for the blocks that follow."""
        buffer = self.buffers.get(key)
        if buffer is None or len(buffer) < rows:
            weight = self.layers[0][0]
            buffer = weight.new_empty((max(rows, self.rows), width), dtype=dtype)
            self.buffers[key] = buffer
        return buffer[:rows]

    def _summed(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) (S, N), summed over the pixels, from the last layer's output `out` (S, N,
        D), which it overwrites: the means sigmoid(logits) for 'tutorial-mse' and the Gaussians
        (-(1/2) sum(((mean - x) / scale)^2) - the constant), else the logits."""
        if self.sigmoid:
            residual = out.sub_(x)
            if self.scale is not None:
                residual.div_(self.scale)
            return residual.square_().sum(-1).mul_(-0.5).sub_(self.constant)
        if self.likelihood == "bernoulli":  # sum(x l) - sum(softplus(l))
            return torch.linalg.vecdot(out, x).sub_(self._softplus_sum(out))
        return log_likelihood(self.likelihood, out, x, self.log_scale)

    def _softplus_sum(self, logits: torch.Tensor) -> torch.Tensor:
        """sum(softplus(l)) over the last axis of `logits` (S, N, D), which it overwrites.

        softplus(l) = relu(l) - log sigmoid(abs(l)), and the sum of logs is the log of products
        over groups of pixels: torch's sigmoid is several times faster than its softplus (or exp
        or log) on the CPU, and a group's product of values in [0.5, 1) cannot underflow.
        """
        group = self.group
        if group is None or logits.dtype != self.dtype:
            return nn.functional.softplus(logits).sum(-1)
        rows = logits.shape[0] * logits.shape[1]
        scratch = self._buffer(-1, rows, logits.shape[-1], logits.dtype).view_as(logits)
        relu_sum = torch.clamp_min(logits, 0, out=scratch).sum(-1)
        halves = logits.abs_().sigmoid_().view(*logits.shape[:-1], -1, group)
        return relu_sum.sub_(halves.prod(-1).log_().sum(-1))


def _product_group(pixels: int, dtype: torch.dtype) -> int | None:
    """The most pixels, a divisor of `pixels`, whose product of values in [0.5, 1) stays a
    normal number of `dtype` (0.5^100 in float32, 0.5^1000 in float64); None below 8."""
    most = 100 if dtype == torch.float32 else 1000 if dtype == torch.float64 else 0
    group = max((size for size in range(1, min(most, pixels) + 1) if pixels % size == 0), default=0)
    return group if group >= 8 else None


def _low(parameter: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`parameter` detached, as a copy in `dtype` where one is given."""
    return parameter.detach() if dtype is None else parameter.detach().to(dtype)


@torch.no_grad()
def importance_weighted(
    model: VAE,
    images: Images | torch.Tensor,
    k: int = DEFAULT_IW_SAMPLES,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    seed: int = EVAL_SEED,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    precision: str = "32",
) -> PerImage:
    """Per-image IWAE estimates of -log p(x) with `k` samples from q(z|x), and the ELBO's parts
    (-log p(x|y) for a conditional model, given the images' `labels`).

    log p(x) ~ log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); the log-sum-exp runs in
    float64 over chunks of samples. Images and samples are batched so that the decoder's work
    stays under `max_memory` bytes (`plan_chunks`), and decoded in cache-sized blocks; an MLP
    decoder takes the fast path (`fast_decoder`), every other model its `importance_terms`. The
    same seed, k, max_memory, precision and device give the same numbers.

    `precision` 'bf16' runs an MLP decoder's matrix products in bf16 (the likelihood and
    everything after it in the model's dtype): 1.5-2x faster on CPUs that multiply bf16
    natively, slower elsewhere. On the tutorial's model and two Bernoulli models (5 epochs,
    1000 Fashion-MNIST test images, k=5000) it moved the mean estimate by at most 0.002 nats
    and single images' by up to 0.43 nats, so '32' is the default and the only precision of
    `evaluate_likelihood` and eval.json.
    """
    if not 1 <= k <= MAX_IW_SAMPLES:
        raise VaelabError(
            f"k (importance samples) must be at least 1 and at most {MAX_IW_SAMPLES:,}, got {k}",
            parameters=("k",),
        )
    if len(images) == 0:
        raise VaelabError("there are no images to evaluate")
    check_seed(seed)
    if precision not in EVAL_PRECISIONS:
        raise VaelabError(
            f"precision must be one of {', '.join(EVAL_PRECISIONS)}, got {precision!r}",
            parameters=("precision",),
        )
    images = as_readable(images)
    parameter = next(model.parameters())
    batch, chunk = plan_chunks(model, len(images), k, parse_size(max_memory))
    if parameter.device.type == "cpu":  # a GPU's own memory fails in one line if it must
        require_memory(
            batch * chunk * _pair_bytes(model),
            f"IWAE in blocks of {batch} images x {chunk} samples (max_memory {max_memory}; a "
            "smaller one evaluates in smaller blocks)",
        )
    rows = block_rows(model, batch, chunk)
    decoder = fast_decoder(model, rows, precision)
    if decoder is None and precision != "32":
        raise VaelabError(
            f"precision {precision!r} is for MLP decoders (arch 'mlp', one stochastic layer); "
            "this model is evaluated in its own precision",
            parameters=("precision",),
        )
    generator = torch.Generator(device=parameter.device).manual_seed(seed)
    parts: list[PerImage] = []
    bar = tqdm(total=len(images), desc=f"IWAE k={k}", unit="img", disable=not progress)
    with bar, evaluating(model), held_prior(model.prior, model.top_posterior):
        for start in range(0, len(images), batch):
            x = read_rows(images, slice(start, start + batch), parameter.device)
            x = x.to(parameter.dtype)
            flat = x.reshape(len(x), -1)
            labels_of_batch = _rows(labels, start, batch, parameter.device)
            parts.append(
                _batch_bounds(model, flat, k, chunk, generator, labels_of_batch, rows, decoder)
            )
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
    images: Images | torch.Tensor,
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


def save_eval(
    run_dir: str | Path, report: LikelihoodReport, posterior: PosteriorDiagnosis | None = None
) -> Path:
    """Write RUN/eval.json atomically, holding the run's lock; returns its path. `posterior`
    (`vaelab.diagnostics.diagnose_posterior`'s figures) is recorded under "posterior".

    When the run has weights, eval.json records their SHA-256 (`weights_sha256`), so that the
    report never shows these numbers beside other weights; weights that changed on disk since
    they were loaded for this evaluation are refused.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        payload: dict[str, object] = dict(asdict(report))
        if posterior is not None:
            payload["posterior"] = posterior.to_dict()
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
        check_run_file(path)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
