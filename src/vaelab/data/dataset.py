"""The dataset every part of vaelab works on: two splits of images, each kept in its stored type
(`vaelab.data.images.Images`) and read as float32 in [0, 1] one batch at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.data.images import Images
from vaelab.data.pixels import check_unit_range
from vaelab.errors import VaelabError


@dataclass(frozen=True)
class Dataset:
    """Train and test splits of images, read as float32 in [0, 1], with optional labels.

    Each split is an `Images`: the pixels in their stored type (uint8, uint16, bool or floats in
    [0, 1]), in memory or mapped from a file, read as an N x D float32 tensor (D = C*H*W in
    channel-major order, C x H x W) one batch at a time. They may be given as `Images`, or as
    arrays or tensors of N x D, N x H x W (one channel) or N x C x H x W. `image_shape` is
    (H, W) and `channels` is C (1 grey, 3 RGB). Labels are int64 class indices, one per image,
    or None for both splits (unlabelled data); `class_names` names the classes (empty without
    labels). `source` says where the images came from and `format` how they were stored ('idx',
    'csv', 'folder', 'npy', 'npz', 'arrays', ...).
    """

    train_images: Images
    train_labels: torch.Tensor | None
    test_images: Images
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
            name = f"{split}_images"
            images = Images.of(getattr(self, name), self.shape, name)
            object.__setattr__(self, name, images)
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

    def check(self) -> None:
        """Refuse float pixels outside [0, 1] in either split, training split first: a pass over
        images mapped from a file (those in memory were checked when they became Images)."""
        self.train_images.check()
        self.test_images.check()

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
    """SHA-256 of the test split: its images in their stored type (floats as float32), and its
    int64 labels.

    A run records it, so that data read again later (from another folder, another working
    directory, a changed file) is known to be the same, or refused. One streaming pass.
    """
    digest = hashlib.sha256()
    dataset.test_images.hash_into(digest)
    _hash_labels(digest, dataset.test_labels)
    return digest.hexdigest()


def float_test_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the test split as float32 pixels and int64 labels: what runs of earlier
    versions recorded as their `test_sha256` (checked only for them)."""
    digest = hashlib.sha256()
    dataset.test_images.hash_floats_into(digest)
    _hash_labels(digest, dataset.test_labels)
    return digest.hexdigest()


def _hash_labels(digest: Any, labels: torch.Tensor | None) -> None:
    if labels is not None:
        digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())


def as_unit_images(values: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 (0-255) is scaled by 1/255, uint16 by 1/65535, floats
    are checked.

    Floats outside [0, 1], NaN or infinity, and other integer types are refused with one line
    naming `name` and what was found, so 0-255 data cannot pass for intensities unnoticed.
    """
    from vaelab.data.pixels import pixel_storage, unit_float

    tensor = pixel_storage(values, name)
    if tensor.is_floating_point() and tensor.numel():
        # One pass: min and max propagate NaN, and an infinity is one of them.
        low, high = (float(v) for v in torch.aminmax(tensor))
        check_unit_range(low, high, name)
        return tensor
    return unit_float(tensor)


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
