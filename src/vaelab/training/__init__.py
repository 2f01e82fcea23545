"""Training: the loop, its callbacks, checkpoints and their guard, precision, devices and ranks."""

from vaelab.training.events import Callback, EpochMetrics, RunStart, StepEnd, TrainResult
from vaelab.training.guard import NonFiniteLoss, TrainingInterrupted
from vaelab.training.loop import train
from vaelab.training.reporters import EpochLog, ProgressBar, format_epoch

__all__ = [
    "Callback", "EpochLog", "EpochMetrics", "NonFiniteLoss", "ProgressBar", "RunStart", "StepEnd",
    "TrainResult", "TrainingInterrupted", "format_epoch", "train",
]  # fmt: skip
