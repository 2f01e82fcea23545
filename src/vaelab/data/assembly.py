"""A Dataset from the images of a training set and, when there is one, a test set; without one, a
seeded split of the training set that keeps the images' order (`vaelab.data.splits`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset, class_names_for, to_unit_float
from vaelab.data.splits import split_indices
from vaelab.errors import VaelabError


@dataclass(frozen=True)
class ImageSet:
    """One split as read: uint8 pixels (N x H x W, or N x D of one channel), labels or None, and
    the files they came from (`where` the images, `labels_where` the labels)."""

    pixels: np.ndarray
    labels: np.ndarray | None
    where: str
    labels_where: str | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one image as stored."""
        return tuple(int(n) for n in self.pixels.shape[1:])


def assemble(
    train: ImageSet,
    test: ImageSet | None,
    config: DataConfig,
    *,
    image_shape: tuple[int, int],
    source: str,
    format: str,
) -> Dataset:
    """The Dataset of `train` and `test` (or a split of `train`), labels dropped when
    `config.labels` is False, classes named by `config.class_names` or by their indices."""
    if test is not None and test.image_shape != train.image_shape:
        raise VaelabError(
            f"{test.where}: test images are {_size(test.image_shape)} but the training images "
            f"({train.where}) are {_size(train.image_shape)}"
        )
    if not config.labels:
        train = ImageSet(train.pixels, None, train.where)
        test = None if test is None else ImageSet(test.pixels, None, test.where)
    names = _class_names(train, test, config)
    images, labels = train.pixels, _labels(train.labels)
    if test is None:
        kept, held = split_indices(len(images), config.test_split, config.split_seed, "test_split")
        test_images, test_labels = images[held.numpy()], _rows(labels, held)
        images, labels = images[kept.numpy()], _rows(labels, kept)
    else:
        test_images, test_labels = test.pixels, _labels(test.labels)
    return Dataset(
        train_images=to_unit_float(images),
        train_labels=labels,
        test_images=to_unit_float(test_images),
        test_labels=test_labels,
        image_shape=image_shape,
        class_names=names,
        source=source,
        format=format,
    )


def _rows(labels: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if labels is None else labels[rows]


def _labels(labels: np.ndarray | None) -> torch.Tensor | None:
    return None if labels is None else torch.from_numpy(labels.astype(np.int64))


def _class_names(train: ImageSet, test: ImageSet | None, config: DataConfig) -> tuple[str, ...]:
    if test is not None and (train.labels is None) != (test.labels is None):
        unlabelled, labelled = (test, train) if test.labels is None else (train, test)
        raise VaelabError(
            f"{unlabelled.where}: no labels, but {labelled.labels_where or labelled.where} has "
            "them; give labels for both or ignore them (labels=False)",
            parameters=("labels",),
        )
    if train.labels is None:
        if config.labels and config.class_names:
            raise VaelabError(
                f"{train.where}: class_names given, but the images carry no labels",
                parameters=("class_names",),
            )
        return ()
    splits = [train] if test is None else [train, test]
    names = class_names_for([torch.from_numpy(s.labels) for s in splits if s.labels is not None],
                            config.class_names)  # fmt: skip
    for split in splits:
        assert split.labels is not None
        top = int(split.labels.max()) if len(split.labels) else -1
        if top >= len(names):
            raise VaelabError(
                f"{split.labels_where or split.where}: holds class {top} but class_names names "
                f"{len(names)} classes",
                parameters=("class_names",),
            )
    return names


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) + (" pixels" if len(shape) > 1 else " values")
