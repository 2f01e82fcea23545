"""Model selection on the validation set: the best epoch's weights, and early stopping.

With a validation split, the run keeps the weights of the epoch with the lowest validation loss
(the first such epoch on a tie), and with `early_stopping` N it stops once N epochs in a row have
not improved on it. Everything here follows from the metrics history alone, so a resumed run
decides exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def best_epoch(history: Sequence[Any]) -> int | None:
    """The epoch (1-based) of the lowest validation loss so far, or None without validation."""
    best, best_loss = None, math.inf
    for row in history:
        if not math.isnan(row.val_loss) and row.val_loss < best_loss:
            best, best_loss = row.epoch, row.val_loss
    return best


def stopped_early(history: Sequence[Any], patience: int) -> bool:
    """Whether `patience` epochs (> 0) have passed since the best validation epoch."""
    best = best_epoch(history)
    return patience > 0 and best is not None and history[-1].epoch - best >= patience


def weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU, kept while training changes the model."""
    return {
        name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()
    }


def selection_record(history: Sequence[Any], epochs: int, patience: int) -> dict[str, Any]:
    """What config.json records of the choice of weights: which epoch, and why training ended."""
    best = best_epoch(history)
    return {
        "weights": "last" if best is None else "best-validation",
        "best_epoch": history[-1].epoch if best is None else best,
        "epochs_run": len(history),
        "epochs": epochs,
        "early_stopping": patience,
        "stopped_early": stopped_early(history, patience) and len(history) < epochs,
    }
