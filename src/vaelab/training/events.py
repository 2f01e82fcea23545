"""What the training loop reports, and the callback interface that receives it.

The loop calls, on the process that logs (rank 0): `on_run_start` once, `on_epoch_start` and
`on_step_end` for each epoch and optimizer step, `on_epoch_end` with the epoch's metrics, `on_note`
for a remark (resuming, a setting that differs from the checkpoint's), and `on_run_end` with the
result. A callback overrides the methods it needs; the others do nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaelab.config import RunConfig
from vaelab.data.images import Images
from vaelab.models import VAE, LossTerms

if TYPE_CHECKING:
    from vaelab.diagnostics import PosteriorDiagnosis

NOT_MEASURED = math.nan  # a metric the epoch did not compute (an empty cell in metrics.csv)


@dataclass(frozen=True)
class EpochMetrics:
    """One row of metrics.csv: the epoch's time, its mean training loss, and the passes after it
    over the test set and the validation set.

    `*_reconstruction` is the tutorial's MSE for 'tutorial-mse', else -log p(x|z) in nats. A pass
    that did not run (no validation split; the test set when it is not evaluated every epoch)
    leaves its three values NaN.
    """

    epoch: int
    seconds: float
    train_loss: float
    train_reconstruction: float
    train_kld: float
    test_loss: float = NOT_MEASURED
    test_reconstruction: float = NOT_MEASURED
    test_kld: float = NOT_MEASURED
    val_loss: float = NOT_MEASURED
    val_reconstruction: float = NOT_MEASURED
    val_kld: float = NOT_MEASURED

    @property
    def tested(self) -> bool:
        """Whether the test set was evaluated after this epoch."""
        return not math.isnan(self.test_loss)

    @property
    def validated(self) -> bool:
        """Whether the validation set was evaluated after this epoch."""
        return not math.isnan(self.val_loss)


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and where (if anywhere) the run was saved."""

    model: VAE
    history: list[EpochMetrics]
    total_seconds: float
    run_dir: Path | None
    best_epoch: int | None = None  # the validation epoch whose weights `model` holds, if any
    # What the kept weights' latent code carries over the test set (None on ranks other than 0);
    # `posterior.collapsed` says whether the model learned nothing (`vaelab.diagnostics`).
    posterior: PosteriorDiagnosis | None = None


@dataclass(frozen=True)
class RunStart:
    """The run about to train: its config (input size set from the data) and where it runs."""

    config: RunConfig
    device: torch.device
    precision: str
    world_size: int
    steps_per_epoch: int
    run_dir: Path | None
    model: VAE | None = None  # the model being trained (for callbacks that draw or log it)
    test_images: Images | None = None  # the test images as the model sees them
    optimizer: torch.optim.Optimizer | None = None
    test_labels: torch.Tensor | None = None  # their classes, for a conditional model
    data: str = ""  # how the training images are read (`vaelab.data.loader.Feed.describe`)


@dataclass(frozen=True)
class StepEnd:
    """An optimizer step just taken. `terms` are tensors on the device (`.item()` syncs it)."""

    epoch: int
    step: int  # steps done in this epoch, 1 to steps_per_epoch
    steps_per_epoch: int
    terms: LossTerms
    lr: float = math.nan  # the learning rate the step was taken with
    kl_weight: float = math.nan  # the weight of the KL term in the step's loss


class Callback:
    """Receives the training loop's events; every method here does nothing."""

    def on_run_start(self, start: RunStart) -> None:
        """Training is about to start (or resume)."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Epoch `epoch` (1-based) begins; it will take `steps` optimizer steps."""

    def on_step_end(self, step: StepEnd) -> None:
        """An optimizer step ended."""

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        """An epoch and its test pass ended."""

    def on_note(self, text: str) -> None:
        """A remark for the user (resuming, a setting that differs from the checkpoint's)."""

    def on_run_end(self, result: TrainResult) -> None:
        """Training ended and the weights were saved."""


class Callbacks(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)


def _fan_out(event: str) -> Callable[..., None]:
    def call(self: Callbacks, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(*args)

    call.__name__ = call.__qualname__ = event
    call.__doc__ = f"Call `{event}` of each callback, in order."
    return call


for _event in ("on_run_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_note",
               "on_run_end"):  # fmt: skip
    setattr(Callbacks, _event, _fan_out(_event))
