"""vaelab: variational auto-encoders on image data.

The public API: train a model (`train`), open what a run saved (`load`, `open_run`), use the model
(`encode`, `decode`, `sample`), measure it (`evaluate`, `evaluate_likelihood`), and draw it
(`write_figures`, `write_report`; these two need the ``vaelab[plots]`` extra and load lazily), and
export it as ONNX or TorchScript (`export_model`, loaded lazily; ONNX needs ``vaelab[export]``),
and explore its latent space inside a notebook (`explore`, loaded lazily; ``vaelab[notebook]``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaelab import _interrupt  # noqa: F401  (first: a Ctrl-C while torch loads is one line)
from vaelab._version import __version__
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import MissingExtra, VaelabError
from vaelab.evaluation import LikelihoodReport, Metrics, evaluate, evaluate_likelihood
from vaelab.latent import decode, encode, sample
from vaelab.models import VAE
from vaelab.rundir import Run, open_run
from vaelab.rundir import load_model as load
from vaelab.training import (
    Callback,
    EpochMetrics,
    NonFiniteLoss,
    TrainingInterrupted,
    TrainResult,
    train,
)

if TYPE_CHECKING:
    from vaelab.export import export_model
    from vaelab.notebook import explore
    from vaelab.viz.plots import write_figures
    from vaelab.viz.report import write_report

# Names whose modules need an extra: imported on first use, so `import vaelab` stays light.
_LAZY = {
    "write_figures": "vaelab.viz.plots",
    "write_report": "vaelab.viz.report",
    "export_model": "vaelab.export",
    "explore": "vaelab.notebook",
}

__all__ = [
    "VAE", "Callback", "DataConfig", "Dataset", "EpochMetrics", "LikelihoodReport", "Metrics",
    "MissingExtra", "ModelConfig", "NonFiniteLoss", "Run", "RunConfig", "TrainConfig",
    "TrainResult", "TrainingInterrupted", "VaelabError", "__version__", "decode", "encode",
    "evaluate", "evaluate_likelihood", "explore", "export_model", "load", "load_dataset",
    "open_run", "sample", "train", "write_figures", "write_report",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
