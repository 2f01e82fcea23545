"""vaelab: variational auto-encoders on image data."""

from __future__ import annotations

__version__ = "0.1.0"

import numpy as np
import torch

from vaelab.checkpoints import load
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.evaluation import Metrics, evaluate
from vaelab.models import VAE
from vaelab.training import TrainResult, train

__all__ = [
    "VAE", "DataConfig", "Dataset", "Metrics", "ModelConfig", "RunConfig", "TrainConfig",
    "TrainResult", "VaelabError", "decode", "encode", "evaluate", "load", "load_dataset", "train",
]  # fmt: skip


def _as_tensor(values: torch.Tensor | np.ndarray, model: VAE) -> torch.Tensor:
    parameter = next(model.parameters())
    tensor = torch.as_tensor(values)
    return tensor.to(device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def encode(model: VAE, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Posterior means of flattened images in [0, 1] (N x D)."""
    x = _as_tensor(images, model)
    return model.encode(x.reshape(len(x), -1))[0]


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images (N x D, in [0, 1]) decoded from latent codes (N x latent_dim)."""
    return model.decode(_as_tensor(z, model))
