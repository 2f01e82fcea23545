"""The dataset every part of vaelab works on: two splits of images as float32 in [0, 1].

Each split lives in one tensor; batches are slices of a permutation of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as float32 tensors in [0, 1] (N x D) with integer labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    source: str

    @property
    def input_dim(self) -> int:
        """Pixels per image, D."""
        return self.image_shape[0] * self.image_shape[1]


def to_unit_float(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N x ...) to a float32 N x D tensor in [0, 1]."""
    flat = np.array(images.reshape(len(images), -1), dtype=np.float32)  # a writable copy
    return torch.from_numpy(flat).div_(255.0)


def require_image_size(dataset: Dataset, input_dim: int, owner: str | Path) -> None:
    """Refuse data whose images do not have the `input_dim` pixels the model of `owner` expects."""
    if dataset.input_dim != input_dim:
        height, width = dataset.image_shape
        raise VaelabError(
            f"{owner}: the model expects {input_dim} pixels per image but {dataset.source} has "
            f"{dataset.input_dim} ({height}x{width})"
        )
