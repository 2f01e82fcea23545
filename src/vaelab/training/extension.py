"""Training a run further: a resume whose config asks for more epochs than the run was set for.

The checkpoint was written under the run's saved config; the resume checks it against that, then
carries on to the new number of epochs on the longer run's learning-rate schedule.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vaelab import rundir
from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.training.events import Callbacks


def extension_base(run_dir: Path, config: RunConfig) -> RunConfig | None:
    """The run's saved config when `config` differs from it in train.epochs alone (a resume that
    extends the run), else None (any other difference is refused by the checkpoint's identity)."""
    saved = rundir.load_config(run_dir)
    if saved.train.epochs == config.train.epochs:
        return None
    if replace(saved, train=replace(saved.train, epochs=config.train.epochs)) != config:
        return None
    if config.train.epochs < saved.train.epochs:
        raise VaelabError(
            f"{run_dir}: a resume can extend a run, not shorten it: epochs={config.train.epochs} "
            f"is below the {saved.train.epochs} it is set for",
            parameters=("epochs",),
        )
    return saved


def extend(
    out_dir: Path | None,
    config: RunConfig,
    saved: RunConfig,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    report: Callbacks,
) -> None:
    """Carry a resumed run on to `config.train.epochs`: config.json says so, and the learning
    rate from the current step on is that of the longer run's schedule."""
    step = scheduler.last_epoch
    lrs = [base * factor(step) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports until the next step
    if out_dir is not None:
        rundir.extend_epochs(out_dir, config.train.epochs)
    report.on_note(
        f"extending the run from {saved.train.epochs} to {config.train.epochs} epochs "
        f"(learning rate from here: {lrs[0]:.3g}, {config.train.lr_schedule} over "
        f"{config.train.epochs} epochs)"
    )
