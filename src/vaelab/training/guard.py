"""What keeps a run safe: checkpoints on schedule, a clean stop on SIGINT/SIGTERM, and no training
(or saving) past a non-finite loss.

The training loop calls `RunGuard.after_step` after each optimizer step and `RunGuard.after_epoch`
after each epoch; everything about checkpoints and signals happens here, not in the loop.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vaelab._interrupt import handling_signals
from vaelab.errors import VaelabError
from vaelab.rundir import CHECKPOINT_FILE, WEIGHTS_FILE
from vaelab.training.checkpoint import (
    EpochProgress,
    Layout,
    Trainables,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class NonFiniteLoss(VaelabError):
    """The loss (or the weights) became NaN or infinite; nothing from that point was saved."""

    exit_code = 3


class TrainingInterrupted(VaelabError):
    """SIGINT or SIGTERM stopped training after a checkpoint was written.

    `where` says at which epoch and step; `run_dir` holds the checkpoint to resume from.
    """

    def __init__(self, signum: int, where: str, run_dir: Path) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {self.signal_name} {where}; checkpoint saved; resume=True with run_dir "
            f"{run_dir} continues it",
            parameters=("resume",),
        )
        self.signum = signum
        self.where = where
        self.run_dir = run_dir
        self.exit_code = 128 + signum


class NothingToResume(VaelabError):
    """resume=True of a run that finished: every epoch is done and its weights are saved.

    Nothing is written; the command line says so and exits 0.
    """

    def __init__(self, run_dir: Path, epochs: int, stopped_early_at: int | None = None) -> None:
        done = (
            f"finished all {epochs} epochs already"
            if stopped_early_at is None
            else f"stopped early after epoch {stopped_early_at} (no better validation loss)"
        )
        super().__init__(
            f"{run_dir}: {done}; nothing to resume (a config with more epochs trains it further)"
        )
        self.run_dir = run_dir
        self.epochs = epochs
        self.stopped_early_at = stopped_early_at


# A billion steps: more than any run of MAX_EPOCHS epochs has between checkpoints it would write.
MAX_CHECKPOINT_EVERY = 1_000_000_000


def check_checkpoint_every(steps: int | None) -> None:
    """Refuse a checkpoint interval that is not a whole number of steps from 1 to
    MAX_CHECKPOINT_EVERY (None: every epoch only)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
        raise VaelabError(
            f"checkpoint_every must be a whole number of steps, got {str(steps)[:40]}",
            parameters=("checkpoint_every",),
        )
    if steps is not None and steps < 1:
        raise VaelabError(
            f"checkpoint_every must be at least 1 step, got {steps}",
            parameters=("checkpoint_every",),
        )
    if steps is not None and steps > MAX_CHECKPOINT_EVERY:
        raise VaelabError(
            f"checkpoint_every must be at most {MAX_CHECKPOINT_EVERY:,} steps (leave it out to "
            f"checkpoint every epoch only), got {steps}",
            parameters=("checkpoint_every",),
        )


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request the loop honours after the current step.

    A second signal stops at once (KeyboardInterrupt); the last checkpoint on disk stays whole.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Catch the stop signals for the duration (main thread only; elsewhere a no-op)."""
        with handling_signals(STOP_SIGNALS, self._handle):
            yield self


# Steps between two reads of the running loss by the host: a read waits for the device (a GPU)
# to finish its queued work, so the loop reads rarely and finds the first bad step afterwards.
LOSS_CHECK_EVERY = 50


class RunGuard:
    """Checkpoints, signals and the non-finite guard of one training run.

    Without a run directory it only guards against a non-finite loss. The loss is read every
    LOSS_CHECK_EVERY steps, at the end of each epoch and before every checkpoint; a non-finite
    loss is reported at the step where it first appeared, from the running totals each step
    leaves on the device.
    """

    def __init__(
        self,
        run_dir: Path | None,
        parts: Trainables,
        layout: Layout,
        identity: dict[str, Any],
        checkpoint_every: int | None = None,
        log: Callable[[str], None] | None = None,
        writer: bool = True,
        earlier_data: Callable[[], str] | None = None,
    ) -> None:
        check_checkpoint_every(checkpoint_every)
        self.earlier_data = earlier_data  # the data fingerprint as earlier checkpoints hold it
        self.writer = writer  # False on distributed ranks other than 0: they read, never write
        self.run_dir = run_dir
        self.parts = parts
        self.layout = layout
        self.identity = identity
        self.every = checkpoint_every
        self.log = log
        self.state = TrainingState()
        self.stop = StopRequest()
        self.saved_at = "none yet"
        self.unchecked: list[torch.Tensor] = []  # the running totals of the steps not read yet
        # A checkpoint past the start exists (this run resumed one, or wrote one): a failure from
        # now on keeps the run directory; before it, the attempt leaves nothing behind.
        self.progress_saved = False

    @property
    def path(self) -> Path | None:
        """The checkpoint file, or None without a run directory."""
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_FILE

    def begin(self, resume: bool) -> TrainingState:
        """Load the checkpoint to resume from, or write the first one (the disk must take it)."""
        if self.path is None:
            return self.state
        if resume:
            self.state, notes = load_checkpoint(
                self.path, self.parts, self.layout, self.identity, self.earlier_data
            )
            self.saved_at = self._position(self.state.epochs_done, self.state.progress)
            self.progress_saved = True
            finished = self.state.epochs_done >= self.layout.epochs and self.state.progress is None
            if finished and (self.path.parent / WEIGHTS_FILE).is_file():
                raise NothingToResume(self.path.parent, self.layout.epochs)
            for note in notes:
                self._say(note)
            self._say(f"resuming {self.run_dir} at {self.saved_at}")
        else:
            self._save(None)
        return self.state

    def finished_early(self, best: int | None) -> None:
        """A resumed run that early stopping had ended: nothing to do once its weights exist."""
        assert self.path is not None
        if (self.path.parent / WEIGHTS_FILE).is_file():
            raise NothingToResume(self.path.parent, self.layout.epochs, self.state.epochs_done)

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM stop training cleanly while this is active (only when saving a run)."""
        if self.path is None:
            yield
            return
        with self.stop.installed():
            yield

    def after_step(self, epoch: int, progress: EpochProgress) -> None:
        """Stop on a non-finite loss; checkpoint when due or when a stop was asked for."""
        self.unchecked.append(progress.totals.detach().clone())
        last_step = progress.step == self.layout.steps_per_epoch
        global_step = (epoch - 1) * self.layout.steps_per_epoch + progress.step
        stopping = self.stop.signum is not None
        saving = (
            self.path is not None
            and not last_step
            and (stopping or (self.every is not None and global_step % self.every == 0))
        )  # the end of an epoch is checkpointed after its test pass
        if saving or last_step or progress.step % LOSS_CHECK_EVERY == 0:
            self._check_losses(epoch, progress.step)
        if saving:
            self.state.epochs_done = epoch - 1
            self._save(progress)
        if stopping and self.path is not None and not last_step:
            self._interrupted(f"at epoch {epoch}, step {progress.step}")

    def _check_losses(self, epoch: int, step: int) -> None:
        """Stop at the first unread step whose running totals are not finite (one host read)."""
        totals = torch.stack(self.unchecked)
        self.unchecked = []
        finite = torch.isfinite(totals).all(dim=1)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0, 0])
        kind = "NaN" if bool(torch.isnan(totals[first]).any()) else "infinite"
        self._non_finite(
            f"the loss became {kind} at epoch {epoch}, "
            f"step {step - len(totals) + 1 + first} of {self.layout.steps_per_epoch}"
        )

    def after_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Record the epoch's metrics and checkpoint; stop here if a signal came meanwhile."""
        self.state.history.append(row)
        self.state.epochs_done = epoch
        if self.path is None:
            self._check_weights(f"epoch {epoch}")
            return
        self._save(None)
        if self.stop.signum is not None and epoch < self.layout.epochs:
            self._interrupted(f"after epoch {epoch}")

    def _save(self, progress: EpochProgress | None) -> None:
        assert self.path is not None
        where = self._position(self.state.epochs_done, progress)
        self._check_weights(where)
        self.state.progress = progress
        if self.writer:
            save_checkpoint(self.path, self.parts, self.state, self.identity)
        self.saved_at = where
        if progress is not None or self.state.epochs_done > 0:
            self.progress_saved = True

    def _check_weights(self, where: str) -> None:
        """Never let non-finite weights be saved (a step can break them with a finite loss)."""
        for name, tensor in self.parts.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                self._non_finite(f"the weights ({name}) became non-finite by {where}")

    def _position(self, epochs_done: int, progress: EpochProgress | None) -> str:
        if progress is None:
            return "the start" if epochs_done == 0 else f"the end of epoch {epochs_done}"
        return f"epoch {epochs_done + 1}, step {progress.step}"

    def _non_finite(self, what: str) -> None:
        kept = ""
        if self.run_dir is not None and self.progress_saved:
            kept = f"; the last good checkpoint (at {self.saved_at}) is kept in {self.run_dir}"
        elif self.run_dir is not None:
            kept = f"; nothing was checkpointed past the start, so {self.run_dir} keeps nothing"
        raise NonFiniteLoss(
            f"{what}; training stopped and these weights were not saved{kept}; "
            "a smaller lr may help",
            parameters=("lr",),
        )

    def _interrupted(self, where: str) -> None:
        assert self.stop.signum is not None and self.run_dir is not None
        raise TrainingInterrupted(self.stop.signum, where, self.run_dir)

    def _say(self, line: str) -> None:
        if self.log:
            self.log(line)
