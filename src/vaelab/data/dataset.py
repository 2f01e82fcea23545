"""The dataset every part of vaelab works on: two splits of images as float32 in [0, 1].

Each split lives in one tensor; batches are slices of a permutation of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class Dataset:
    """Train and test splits of images as float32 tensors in [0, 1], with optional labels.

    Images are stored flat, N x D with D = C*H*W in channel-major order (C x H x W); they may be
    given as N x D, N x H x W (one channel) or N x C x H x W. `image_shape` is (H, W) and
    `channels` is C (1 grey, 3 RGB). Labels are int64 class indices, one per image, or None for
    both splits (unlabelled data); `class_names` names the classes (empty without labels).
    `source` says where the images came from and `format` how they were stored ('idx', 'csv',
    'folder', 'npy', 'npz', 'arrays', ...).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor | None
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    source: str
    channels: int = 1
    format: str = ""

    def __post_init__(self) -> None:
        height, width = (int(side) for side in self.image_shape)
        object.__setattr__(self, "image_shape", (height, width))
        object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        if self.channels < 1 or height < 1 or width < 1:
            raise VaelabError(
                f"image_shape {height}x{width} with {self.channels} channel(s) holds no pixels",
                parameters=("image_shape", "channels"),
            )
        if (self.train_labels is None) != (self.test_labels is None):
            raise VaelabError(
                "give labels for both splits or for neither (train_labels, test_labels)",
                parameters=("train_labels", "test_labels"),
            )
        for split in ("train", "test"):
            images = as_unit_images(getattr(self, f"{split}_images"), f"{split}_images")
            images = images.reshape(len(images), -1)
            if images.shape[1] != self.input_dim:
                raise VaelabError(
                    f"{split}_images have {images.shape[1]} values per image, image_shape "
                    f"{height}x{width} with {self.channels} channel(s) has {self.input_dim}",
                    parameters=(f"{split}_images", "image_shape"),
                )
            object.__setattr__(self, f"{split}_images", images.to(torch.float32))
            object.__setattr__(self, f"{split}_labels", self._labels(split, len(images)))

    def _labels(self, split: str, count: int) -> torch.Tensor | None:
        raw = getattr(self, f"{split}_labels")
        if raw is None:
            return None
        labels = torch.as_tensor(raw)
        name = f"{split}_labels"
        if labels.shape != (count,):
            raise VaelabError(
                f"{name} must hold one label per image ({count}), got shape {tuple(labels.shape)}",
                parameters=(name,),
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise VaelabError(f"{name} must be integer class indices", parameters=(name,))
        labels = labels.to(torch.int64)
        if count and int(labels.min()) < 0:
            raise VaelabError(f"{name} must not be negative", parameters=(name,))
        if count and self.class_names and int(labels.max()) >= len(self.class_names):
            raise VaelabError(
                f"{name} holds class {int(labels.max())} but class_names names "
                f"{len(self.class_names)}",
                parameters=(name, "class_names"),
            )
        return labels

    @property
    def input_dim(self) -> int:
        """Values per image, D = C*H*W."""
        return self.channels * self.image_shape[0] * self.image_shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape, (C, H, W)."""
        return (self.channels, *self.image_shape)

    @property
    def labelled(self) -> bool:
        """Whether the images carry class labels."""
        return self.train_labels is not None


def class_names_for(
    labels: Sequence[torch.Tensor | None], names: Sequence[str] = ()
) -> tuple[str, ...]:
    """`names` when given, else the class indices found in `labels` as text ('0', '1', ...)."""
    if names:
        return tuple(names)
    present = [int(t.max()) for t in labels if t is not None and len(t)]
    return tuple(str(i) for i in range(max(present) + 1)) if present else ()


def test_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the test split as the model sees it (float32 pixels, int64 labels).

    A run records it, so that data read again later (from another folder, another working
    directory, a changed file) is known to be the same, or refused.
    """
    digest = hashlib.sha256()
    digest.update(dataset.test_images.detach().cpu().contiguous().numpy().tobytes())
    if dataset.test_labels is not None:
        digest.update(dataset.test_labels.to(torch.int64).contiguous().numpy().tobytes())
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
        channels, height, width = dataset.shape
        raise VaelabError(
            f"{owner}: the model expects {input_dim} values per image but {dataset.source} has "
            f"{dataset.input_dim} ({channels}x{height}x{width})"
        )
