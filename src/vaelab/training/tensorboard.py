"""A callback that writes a run's progress as TensorBoard event files (needs vaelab[tensorboard]).

metrics.csv stays the record of a run; this is a view of it for TensorBoard, with the images and
the step-level curves that metrics.csv does not hold. Everything is logged against the optimizer
step (1-based, counted over the whole run), so that a resumed run can drop what the interrupted
one logged past its checkpoint (`purge_step`) and go on where it stopped:

- per epoch, at the epoch's last step: `train/`, `val/` and `test/` `loss`, `reconstruction` and
  `kld` (a pass that did not run is left out), `epoch/seconds` and `epoch/epoch`;
- every `steps_every` steps (10 by default: 1800 points a curve, about 0.3 MB in all, for the
  tutorial's 60 epochs of 300 steps): `step/loss`, `step/lr`, `step/kl_weight` (the losses stay
  on the device until the epoch ends, so that logging them never waits for a GPU mid-epoch);
- every `images_every` epochs and at the end of the run: `images/reconstructions` (the first test
  images above their reconstructions) and `images/samples` (decoded from the same codes
  z ~ N(0, I) every time);
- at the end: the config's scalar settings as hparams, with the final metrics `hparams/*`.
"""

from __future__ import annotations

import atexit
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaelab import latent
from vaelab._bounds import require_whole
from vaelab._extras import require_extra
from vaelab.config import MAX_EPOCHS
from vaelab.errors import VaelabError
from vaelab.training.events import Callback, EpochMetrics, RunStart, StepEnd, TrainResult
from vaelab.training.guard import MAX_CHECKPOINT_EVERY

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

STEPS_EVERY = 10
IMAGES_EVERY = 10
RECONSTRUCTIONS = 8  # test images in the reconstruction grid (one row, their reconstructions below)
SAMPLES = 16  # prior samples, in rows of 8
SAMPLE_SEED = 0
_ROW = 8
_SPLITS = ("train", "val", "test")
_TERMS = ("loss", "reconstruction", "kld")


class TensorBoardLogger(Callback):
    """Writes scalars, images and hparams of a training run into `log_dir` for TensorBoard.

    `images_every` N draws the images after every N-th epoch and at the end (0: never);
    `steps_every` k logs the step curves at every k-th step. A run that resumes into the same
    `log_dir` appends to it: global steps go on, and points an interrupted run logged past its
    checkpoint are discarded (TensorBoard's purge_step).
    """

    def __init__(
        self,
        log_dir: str | Path,
        images_every: int = IMAGES_EVERY,
        steps_every: int = STEPS_EVERY,
    ) -> None:
        require_extra("tensorboard", "tensorboard")
        require_whole("images_every", images_every, 0, MAX_EPOCHS)
        require_whole("steps_every", steps_every, 1, MAX_CHECKPOINT_EVERY)
        self.log_dir = Path(log_dir)
        self.images_every = images_every
        self.steps_every = steps_every
        self.start: RunStart | None = None
        self.writer: SummaryWriter | None = None
        self.last_step = 0  # the global step of the last epoch logged
        self.images_at = -1  # the global step of the last images drawn
        self.pending: list[tuple[int, torch.Tensor, float, float]] = []  # step curves' points

    # -------------------------------------------------------------- the loop's events

    def on_run_start(self, start: RunStart) -> None:
        self.close()  # a logger used for a second run starts afresh
        self.start = start

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.writer is None:
            per_epoch = self._steps_per_epoch()
            first = (epoch - 1) * per_epoch + (per_epoch - steps) + 1
            self.writer = self._open(purge_step=first if first > 1 else None)

    def on_step_end(self, step: StepEnd) -> None:
        global_step = (step.epoch - 1) * step.steps_per_epoch + step.step
        if self.writer is None or global_step % self.steps_every:
            return
        self.pending.append((global_step, step.terms.loss.detach(), step.lr, step.kl_weight))

    def _write_step_curves(self) -> None:
        """The step points gathered since the last call, their losses read in one transfer."""
        if self.writer is None or not self.pending:
            return
        losses = torch.stack([loss for _, loss, _, _ in self.pending]).tolist()
        for (global_step, _, lr, kl_weight), loss in zip(self.pending, losses):
            self.writer.add_scalar("step/loss", loss, global_step)
            self.writer.add_scalar("step/lr", lr, global_step)
            self.writer.add_scalar("step/kl_weight", kl_weight, global_step)
        self.pending = []

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        if self.writer is None:
            return
        self._write_step_curves()
        global_step = metrics.epoch * self._steps_per_epoch()
        for tag, value in epoch_scalars(metrics).items():
            self.writer.add_scalar(tag, value, global_step)
        if self.images_every and metrics.epoch % self.images_every == 0:
            self._add_images(global_step)
        self.last_step = global_step
        self.writer.flush()  # what an interrupted run logged up to its last epoch is on disk

    def on_run_end(self, result: TrainResult) -> None:
        if self.writer is None:  # no epoch ran (a finished run resumed): nothing new to log
            return
        if self.images_every and self.images_at != self.last_step:
            self._add_images(self.last_step, result.model)
        self._add_hparams(result)
        self.close()

    def close(self) -> None:
        """Flush and close the event file (the end of a run does it; so does the interpreter's)."""
        if self.writer is not None:
            atexit.unregister(self.close)
            self._write_step_curves()
            self.writer.close()
            self.writer = None

    # -------------------------------------------------------------- writing

    def _open(self, purge_step: int | None) -> SummaryWriter:
        from torch.utils.tensorboard import SummaryWriter

        _wait_for_a_later_second(self.log_dir)
        try:
            writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        except OSError as exc:
            raise VaelabError(
                f"{self.log_dir}: cannot write the TensorBoard logs ({exc.strerror})"
            ) from None
        atexit.register(self.close)  # an interrupted run still flushes what it logged
        return writer

    def _steps_per_epoch(self) -> int:
        assert self.start is not None, "on_run_start comes first"
        return self.start.steps_per_epoch

    def _add_images(self, global_step: int, model: Any = None) -> None:
        assert self.writer is not None and self.start is not None
        model = model if model is not None else self.start.model
        if model is None:
            return
        test_images = self.start.test_images
        if test_images is not None and len(test_images):
            originals = test_images[:RECONSTRUCTIONS]
            classes = self.start.test_labels
            classes = None if classes is None else classes[:RECONSTRUCTIONS]
            means = latent.posterior(model, originals, labels=classes)[0]
            decoded = latent.decode(model, means, labels=classes).float().cpu()
            pair = torch.cat([originals.float().cpu(), decoded])
            grid = image_grid(pair, model.config.shape, columns=len(originals))
            self.writer.add_image("images/reconstructions", grid, global_step)
        samples = latent.sample(model, SAMPLES, seed=SAMPLE_SEED)
        grid = image_grid(samples, model.config.shape, columns=_ROW)
        self.writer.add_image("images/samples", grid, global_step)
        self.images_at = global_step

    def _add_hparams(self, result: TrainResult) -> None:
        from torch.utils.tensorboard.summary import hparams

        assert self.writer is not None and self.start is not None
        metrics = final_metrics(result)
        settings = flat_settings(self.start.config.to_dict())
        experiment, session_start, session_end = hparams(settings, metrics)
        file_writer = self.writer.file_writer
        assert file_writer is not None
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary, self.last_step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self.last_step)


# ---------------------------------------------------------------- what is logged


def epoch_scalars(metrics: EpochMetrics) -> dict[str, float]:
    """The scalars of an epoch by tag (`train/loss`, ..., `epoch/seconds`); passes not run left
    out."""
    scalars = {
        f"{split}/{term}": getattr(metrics, f"{split}_{term}")
        for split in _SPLITS
        for term in _TERMS
    }
    scalars = {tag: value for tag, value in scalars.items() if not math.isnan(value)}
    scalars["epoch/seconds"] = metrics.seconds
    scalars["epoch/epoch"] = float(metrics.epoch)
    return scalars


def final_metrics(result: TrainResult) -> dict[str, float]:
    """`hparams/*`: the losses of the epoch whose weights the run ends with, and its number."""
    chosen = result.best_epoch or result.history[-1].epoch
    row = next(row for row in result.history if row.epoch == chosen)
    metrics = {"hparams/epoch": float(row.epoch)}
    for split in _SPLITS:
        value = getattr(row, f"{split}_loss")
        if not math.isnan(value):
            metrics[f"hparams/{split}_loss"] = value
    return metrics


def flat_settings(
    config: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
    """The scalar values of nested settings under dotted names (`train.lr`); lists and None
    left out."""
    return dict(_flatten(config, prefix))


def _flatten(values: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (bool, int, float, str)):
            yield f"{prefix}{key}", value


def image_grid(images: torch.Tensor, shape: tuple[int, int, int], columns: int) -> torch.Tensor:
    """Flat images (N x C*H*W, channel-major, in [0, 1]) tiled into one C x rows*H x columns*W
    image, row by row; a short last row is left black."""
    channels, height, width = shape
    rows = math.ceil(len(images) / columns)
    tiles = images.reshape(-1, channels, height, width).clamp(0, 1)
    padded = torch.zeros(rows * columns, channels, height, width, dtype=tiles.dtype)
    padded[: len(tiles)] = tiles
    grid = padded.reshape(rows, columns, channels, height, width).permute(2, 0, 3, 1, 4)
    return grid.reshape(channels, rows * height, columns * width)


def _wait_for_a_later_second(log_dir: Path) -> None:
    """Make sure a new event file sorts after those in `log_dir` (TensorBoard reads them in the
    order of their names, which start with the second each was made in): a resumed run's purge
    and points must come after the earlier run's."""
    stamps = (_event_file_second(path.name) for path in log_dir.glob("events.out.tfevents.*"))
    wait = max(stamps, default=-1) + 1 - time.time()
    if 0 < wait <= 2:  # longer: the clocks disagree, and waiting would not make them agree
        time.sleep(wait)


def _event_file_second(name: str) -> int:
    """The second in an event file's name (`events.out.tfevents.SECOND.HOST.PID.N`), or -1."""
    field = name.split(".")[3] if name.count(".") >= 3 else ""
    return int(field) if field.isdigit() else -1
