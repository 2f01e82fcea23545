"""The training loop: Adam on the tutorial's loss, a shuffled pass per epoch, then a test pass."""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

import vaelab
from vaelab import checkpoints
from vaelab.config import RunConfig, TrainConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.losses import tutorial_loss
from vaelab.models import VAE


@dataclass(frozen=True)
class EpochMetrics:
    """One row of metrics.csv."""

    epoch: int
    seconds: float
    train_loss: float
    train_mse: float
    train_kld: float
    test_loss: float
    test_mse: float
    test_kld: float


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and where (if anywhere) the run was saved."""

    model: VAE
    history: list[EpochMetrics]
    total_seconds: float
    run_dir: Path | None


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


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
    total = config.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config.lr_schedule, step, total)
    )


def format_epoch(row: EpochMetrics) -> str:
    """The tutorial's log line."""
    return (
        f"epoch {row.epoch:02d} - {row.seconds:.1f}s - loss {row.train_loss:.2f} - "
        f"test_loss {row.test_loss:.2f} (MSE {row.test_mse:.2f} | KLD {row.test_kld:.2f})"
    )


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    progress: bool = False,
    description: str = "",
) -> tuple[float, float, float]:
    """One pass over a fresh permutation of `images`; returns mean (loss, MSE, KLD) over batches."""
    model.train()
    n_batches = len(images) // batch_size
    order = torch.randperm(len(images), generator=generator, device=generator.device)
    totals = torch.zeros(3, device=images.device)
    batches = tqdm(range(n_batches), desc=description, leave=False, disable=not progress)
    for step in batches:
        batch = images[order[step * batch_size : (step + 1) * batch_size]]
        recon, mu, logvar = model(batch, generator)
        terms = tutorial_loss(recon, batch, mu, logvar)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        scheduler.step()
        totals += torch.stack(terms).detach()
    loss, mse, kld = (totals / n_batches).tolist()
    return loss, mse, kld


def _check_fits(config: RunConfig, dataset: Dataset) -> None:
    if config.model.input_dim != dataset.input_dim:
        raise VaelabError(
            f"the model expects {config.model.input_dim} pixels per image but the data "
            f"({dataset.source}) has {dataset.input_dim}"
        )
    if config.train.batch_size > len(dataset.train_images):
        raise VaelabError(
            f"batch size {config.train.batch_size} is larger than the training set "
            f"({len(dataset.train_images)} images)"
        )


def run_info(config: RunConfig, dataset: Dataset, device: torch.device) -> dict[str, object]:
    """What config.json records beside the config itself."""
    return {
        "dataset": {
            "source": dataset.source,
            "train_images": len(dataset.train_images),
            "test_images": len(dataset.test_images),
            "image_shape": list(dataset.image_shape),
            "class_names": list(dataset.class_names),
        },
        "device": str(device),
        "versions": {
            "vaelab": vaelab.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def train(
    config: RunConfig | None = None,
    dataset: Dataset | None = None,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a VAE as the config says; when `run_dir` is given, save the run there.

    The model's input size follows the data. Returns the model, the per-epoch history and the time.
    """
    config = config or RunConfig()
    dataset = dataset or load_dataset(config.data)
    config = replace(config, model=replace(config.model, input_dim=dataset.input_dim))
    _check_fits(config, dataset)
    device = resolve_device(config.train.device)
    out_dir = None
    if run_dir is not None:
        out_dir = checkpoints.prepare_run_dir(Path(run_dir), overwrite=overwrite)
        checkpoints.save_config(out_dir, config, run_info(config, dataset, device))

    torch.manual_seed(config.train.seed)
    model = VAE(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    scheduler = make_scheduler(
        optimizer, config.train, len(dataset.train_images) // config.train.batch_size
    )
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    train_images = dataset.train_images.to(device)
    test_images = dataset.test_images.to(device)
    progress = sys.stderr.isatty()

    history: list[EpochMetrics] = []
    started = time.perf_counter()
    for epoch in range(1, config.train.epochs + 1):
        epoch_start = time.perf_counter()
        train_terms = train_epoch(
            model, optimizer, scheduler, train_images, config.train.batch_size, generator,
            progress=progress, description=f"epoch {epoch:02d}",
        )  # fmt: skip
        test = evaluate(model, test_images, config.train.test_batch_size)
        row = EpochMetrics(
            epoch, time.perf_counter() - epoch_start, *train_terms, test.loss, test.mse, test.kld
        )
        history.append(row)
        if log:
            log(format_epoch(row))
        if out_dir is not None:
            checkpoints.save_metrics(out_dir, history)
    total = time.perf_counter() - started
    if out_dir is not None:
        checkpoints.save_weights(out_dir, model)
    if log:
        log(f"total {total:.1f}s for {config.train.epochs} epochs")
    return TrainResult(model=model.eval(), history=history, total_seconds=total, run_dir=out_dir)
