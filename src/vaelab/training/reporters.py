"""Callbacks that tell a person how training goes: the tutorial's log line and a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from vaelab.diagnostics import collapse_warning
from vaelab.training.events import Callback, EpochMetrics, RunStart, StepEnd, TrainResult


def reconstruction_label(likelihood: str) -> str:
    """'MSE' for the tutorial's loss; '-log p(x|z)' (nats) for the other likelihoods."""
    return "MSE" if likelihood == "tutorial-mse" else "-log p(x|z)"


def format_epoch(row: EpochMetrics, reconstruction: str = "MSE") -> str:
    """The tutorial's log line; `reconstruction` names the first part of the test loss.

    With a validation split the line shows val_loss, and test_loss only when the test set was
    evaluated that epoch.
    """
    parts = [f"epoch {row.epoch:02d} - {row.seconds:.1f}s - loss {row.train_loss:.2f}"]
    if row.validated:
        parts.append(
            f"val_loss {row.val_loss:.2f} ({reconstruction} {row.val_reconstruction:.2f} | "
            f"KLD {row.val_kld:.2f})"
        )
    if row.tested:
        parts.append(
            f"test_loss {row.test_loss:.2f} ({reconstruction} {row.test_reconstruction:.2f} | "
            f"KLD {row.test_kld:.2f})"
        )
    return " - ".join(parts)


class EpochLog(Callback):
    """The tutorial's lines: the device, one line per epoch, the total time, and a warning when
    the posterior collapsed (to `write`)."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self.label = "MSE"
        self.steps_per_epoch: int | None = None
        self.likelihood: str | None = None

    def on_run_start(self, start: RunStart) -> None:
        self.label = reconstruction_label(start.config.model.likelihood)
        self.steps_per_epoch = start.steps_per_epoch
        self.likelihood = start.config.model.likelihood
        ranks = f", {start.world_size} ranks" if start.world_size > 1 else ""
        self.write(f"device {start.device}, precision {start.precision}{ranks}")
        if start.data:
            self.write(start.data)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        self.write(format_epoch(metrics, self.label))

    def on_note(self, text: str) -> None:
        self.write(text)

    def on_run_end(self, result: TrainResult) -> None:
        epochs = len(result.history)
        self.write(f"total {result.total_seconds:.1f}s for {epochs} epochs")
        if result.posterior is not None:
            warning = collapse_warning(
                result.posterior, self.steps_per_epoch, epochs, self.likelihood
            )
            if warning is not None:
                self.write(warning)


class ProgressBar(Callback):
    """A tqdm bar over each epoch's steps, removed when the epoch ends."""

    def __init__(self, file: Any = None, **tqdm_options: Any) -> None:
        self.file = file if file is not None else sys.stderr
        self.options = tqdm_options  # passed on to tqdm (e.g. mininterval)
        self.bar: tqdm | None = None

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.bar = tqdm(
            total=steps, desc=f"epoch {epoch:02d}", leave=False, file=self.file, **self.options
        )

    def on_step_end(self, step: StepEnd) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
