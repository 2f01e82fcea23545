"""The dataset every part of vaelab works on: two splits of images as float32 in [0, 1].

Each split lives in one tensor; batches are slices of a permutation of it.
"""

from __future__ import annotations

import hashlib
import math
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

    def __post_init__(self) -> None:
        height, width = self.image_shape
        for split in ("train", "test"):
            images = as_unit_images(getattr(self, f"{split}_images"), f"{split}_images")
            images = images.reshape(len(images), -1)
            if images.shape[1] != height * width:
                raise VaelabError(
                    f"{split}_images have {images.shape[1]} pixels per image, image_shape "
                    f"{height}x{width} has {height * width}",
                    parameters=(f"{split}_images", "image_shape"),
                )
            labels = torch.as_tensor(getattr(self, f"{split}_labels"))
            if labels.shape != (len(images),):
                raise VaelabError(
                    f"{split}_labels must hold one label per image ({len(images)}), "
                    f"got shape {tuple(labels.shape)}",
                    parameters=(f"{split}_labels",),
                )
            object.__setattr__(self, f"{split}_images", images.to(torch.float32))
            object.__setattr__(self, f"{split}_labels", labels)

    @property
    def input_dim(self) -> int:
        """Pixels per image, D."""
        return self.image_shape[0] * self.image_shape[1]


def test_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the test split as the model sees it (float32 pixels, int64 labels).

    A run records it, so that data read again later (from another folder, another working
    directory, a changed file) is known to be the same, or refused.
    """
    digest = hashlib.sha256()
    digest.update(dataset.test_images.detach().cpu().contiguous().numpy().tobytes())
    digest.update(dataset.test_labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def as_unit_images(values: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 (0-255) is scaled by 1/255, floats are checked.

    Floats outside [0, 1], NaN or infinity, and other integer types are refused with one line
    naming `name` and what was found, so 0-255 data cannot pass for intensities unnoticed.
    """
    tensor = torch.as_tensor(values)
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32).div_(255.0)
    if tensor.dtype == torch.bool:
        return tensor.to(torch.float32)
    if not tensor.is_floating_point():
        raise VaelabError(
            f"{name}: pixels of type {str(tensor.dtype).removeprefix('torch.')} are not "
            "intensities; give uint8 (0-255, scaled by 1/255) or floats in [0, 1]",
            parameters=(name,),
        )
    if tensor.numel() == 0:
        return tensor
    # One pass: min and max propagate NaN, and an infinity is one of them.
    low, high = (float(v) for v in torch.aminmax(tensor))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise VaelabError(f"{name}: pixels hold NaN or infinite values", parameters=(name,))
    if low < 0.0 or high > 1.0:
        hint = "; 0-255 values? give them as uint8, or divide by 255" if high > 1.0 else ""
        raise VaelabError(
            f"{name}: pixel values must lie in [0, 1], found min {low:.4g} and max {high:.4g}"
            f"{hint}",
            parameters=(name,),
        )
    return tensor


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
