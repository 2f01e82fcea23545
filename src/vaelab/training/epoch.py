"""One epoch of training, written out: a fresh permutation, then one optimizer step per batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import closing

import torch
from torch import nn

from vaelab.config import TrainConfig
from vaelab.data.images import Images
from vaelab.data.loader import Feed
from vaelab.errors import VaelabError
from vaelab.models import VAE, LossTerms
from vaelab.models.likelihoods import kl_weight
from vaelab.training.checkpoint import EpochProgress
from vaelab.training.cpu import subnormals_flushed
from vaelab.training.cuda_graph import GraphedStep
from vaelab.training.distributed import SINGLE_PROCESS, World, local_rows, mean_over_ranks, wrap
from vaelab.training.mlp_step import MLPStep, covers
from vaelab.training.precision import Bf16Copy, autocast

Objective = nn.Module | Bf16Copy | MLPStep | GraphedStep


def _as_feed(images: Feed | Images | torch.Tensor, device: torch.device) -> Feed:
    """`images` as a Feed read in this process (a float tensor as N x 1 x 1 x D images)."""
    if isinstance(images, Feed):
        return images
    if isinstance(images, torch.Tensor):
        images = Images(images.reshape(len(images), 1, 1, -1))
    images.check()
    return Feed(images, device)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based).

    'cosine-tail' keeps the tutorial's rate for the first 2/3 of the steps, then anneals it along a
    half cosine towards 0 at the last step, so the final weights settle instead of jittering.
    """
    if schedule == "constant":
        return 1.0
    hold = (2 * total_steps) // 3
    if step < hold:
        return 1.0
    progress = (step - hold + 1) / (total_steps - hold + 1)
    return 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule `config.lr_schedule`, stepped once per optimizer step."""
    total = config.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config.lr_schedule, step, total)
    )


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Adam:
    """The tutorial's Adam, as torch's fused kernel where this torch and device have one."""
    try:
        return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=config.lr)


def make_objective(
    model: VAE, world: World, precision: str, config: TrainConfig | None = None
) -> Objective:
    """What a training step differentiates: the model's loss, DDP-wrapped when distributed.

    Make it before the optimizer. A single process trains the MLP models `MLPStep` covers with
    its hand-written backward pass (unless `config.backward` is 'autograd'). Otherwise, in
    bf16-mixed, a single process trains through a bf16 copy of the layers (same arithmetic as
    autocast, fewer casts); distributed runs use autocast, since DDP reduces the gradients of the
    module it wraps.
    """
    config = config or TrainConfig()
    if config.cuda_graphs:
        _check_cuda_graphs(model, world, precision, config)
        return GraphedStep(MLPStep(model, precision), config.batch_size)
    if not world.distributed and uses_mlp_step(model, precision, config):
        return MLPStep(model, precision)
    if precision == "bf16-mixed" and not world.distributed:
        return Bf16Copy(model)
    return wrap(model, world)


def _check_cuda_graphs(model: VAE, world: World, precision: str, config: TrainConfig) -> None:
    """Refuse `cuda_graphs` where there is no hand-written step on a CUDA device to capture."""
    device = next(model.parameters()).device
    reasons = {
        f"the device is {device.type}, not cuda": device.type != "cuda",
        "the run is distributed": world.distributed,
    }
    reason = next((why for why, applies in reasons.items() if applies), None)
    reason = reason or mlp_step_blocker(model, precision, config)
    if reason is not None:
        raise VaelabError(
            f"cuda_graphs replays the MLP's hand-written step on a CUDA device, but {reason}",
            parameters=("cuda_graphs",),
        )


def uses_mlp_step(model: nn.Module, precision: str, config: TrainConfig) -> bool:
    """Whether a single process trains `model` with `MLPStep` under `config`."""
    return mlp_step_blocker(model, precision, config) is None


def mlp_step_blocker(model: nn.Module, precision: str, config: TrainConfig) -> str | None:
    """None when `MLPStep` trains `model` under `config`, else why not (in a few words)."""
    if config.backward == "autograd":
        return "backward is 'autograd'"
    return covers(model, precision, config.train_samples, config.objective)


def training_step(
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    noise: torch.Tensor,
    precision: str,
    kl_scale: float = 1.0,
    labels: torch.Tensor | None = None,
    bound: str = "elbo",
) -> LossTerms:
    """One optimizer step on `batch`: forward (mixed precision if asked), loss, backward, Adam.

    `objective` comes from `make_objective` (or is the model's loss as a module); `noise` is eps
    (one sample per image, or S samples); `labels` the batch's classes for a conditional model;
    `bound` the training objective, 'elbo' or 'iwae'.
    """
    if isinstance(objective, MLPStep | GraphedStep):  # unconditional one-sample ELBO training
        terms = objective.step(batch, noise, kl_scale)
        objective.adam.step(optimizer)
        return terms
    if isinstance(objective, Bf16Copy):
        terms = objective.loss(batch, kl_scale, noise, labels, bound)
        objective.backward(terms.loss)
    else:
        with autocast(precision, batch.device):
            terms = objective(batch, None, kl_scale, noise, labels, bound)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
    optimizer.step()
    return terms


@subnormals_flushed()
def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: Feed | Images | torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    precision: str = "32",
    first_step: int = 0,
    resume_from: EpochProgress | None = None,
    after_step: Callable[[EpochProgress, LossTerms], None] | None = None,
    objective: Objective | None = None,
    world: World = SINGLE_PROCESS,
    binarize: bool = False,
    labels: torch.Tensor | None = None,
) -> tuple[float, float, float]:
    """One pass over a fresh permutation of `images`; returns mean (loss, reconstruction, KLD).

    `images` is a `Feed` (`vaelab.data.loader.make_feed`: the images and how their batches are
    read), or Images or an N x D float tensor, gathered in this process.

    `objective` is `make_objective`'s, made once per run (without it, the model's loss under
    autocast). `first_step` is the global step at the start of the epoch (for the KL warm-up).
    `resume_from` continues an epoch a checkpoint stopped inside; `after_step` sees the progress
    and the step's loss terms after each step. Each rank of `world` trains on its rows of every
    batch, with the noise a single process would draw for them; the metrics are averaged over the
    ranks. `binarize` draws each batch afresh as x ~ Bernoulli(pixels) from `generator` (dynamic
    binarization), before the step's noise. `labels` (one per image) go to a conditional model.
    With `config.train_samples` S above 1, each step draws S samples of the noise per image.
    The epoch runs with subnormal floats flushed to zero (`vaelab.training.cpu.subnormals_flushed`).
    """
    model.train()
    objective = objective if objective is not None else wrap(model, world)
    rows = local_rows(config.batch_size, world)
    samples = config.train_samples
    noise_shape: tuple[int, ...] = (config.batch_size, model.noise_dim)
    if samples > 1:
        noise_shape = (samples, *noise_shape)
    batch_size = config.batch_size
    feed = _as_feed(images, generator.device)
    n_batches = len(feed.images) // batch_size
    start = resume_from or EpochProgress(
        0,
        torch.randperm(len(feed.images), generator=generator, device=generator.device),
        torch.zeros(3, device=generator.device),
    )
    order, totals = start.order, start.totals
    batches = feed.epoch(order, rows, batch_size, start.step, n_batches)
    with closing(batches):  # a stop mid-epoch ends the DataLoader's workers too
        for step, batch in zip(range(start.step, n_batches), batches):
            first = step * batch_size
            if binarize:  # uniforms for the whole batch: every rank draws what one process would
                uniform = torch.rand((batch_size, batch.shape[1]), generator=generator,
                                     device=generator.device)[rows]  # fmt: skip
                batch = (uniform < batch).to(batch.dtype)
            noise = torch.randn(noise_shape, generator=generator, device=generator.device)
            noise = noise[rows] if samples == 1 else noise[:, rows]
            kl_scale = kl_weight(config.beta, config.kl_warmup, first_step + step, n_batches)
            batch_labels = None
            if labels is not None:
                rows_order = order[first + rows.start : first + rows.stop]
                batch_labels = torch.index_select(labels, 0, rows_order)
            terms = training_step(
                objective, optimizer, batch, noise, precision, kl_scale, batch_labels,
                config.objective,
            )  # fmt: skip
            scheduler.step()
            totals += mean_over_ranks(torch.stack(terms).detach(), world)
            if after_step is not None:
                after_step(EpochProgress(step + 1, order, totals), terms)
    loss, reconstruction, kld = (totals / n_batches).tolist()
    return loss, reconstruction, kld
