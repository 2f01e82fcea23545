"""What a model trains, validates and is tested on: the dataset binarized as the config says, and
the validation rows held out of the training set (both seeded by `DataConfig.split_seed`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.splits import split_indices


@dataclass(frozen=True)
class ModelData:
    """The image tensors of a run: training, validation (None without a split) and test rows,
    and their labels (None for unlabelled data)."""

    train: torch.Tensor
    val: torch.Tensor | None
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def draw_binary(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x ~ Bernoulli(pixels): each value 1 with the probability its intensity gives, else 0.

    Drawn as uniforms compared with the intensities, so a batch split over ranks draws the same
    values as one process would.
    """
    uniform = torch.rand(images.shape, generator=generator, device=images.device)
    return (uniform < images).to(images.dtype)


def binarized(dataset: Dataset, config: DataConfig) -> Dataset:
    """The dataset as the model sees it between epochs.

    'static': the training and then the test images drawn once from `split_seed`; 'dynamic': the
    test images drawn once from `split_seed` (training batches are drawn afresh, in the loop), so
    every evaluation of a run sees the same binary test set; 'none': unchanged.
    """
    if config.binarize == "none":
        return dataset
    generator = torch.Generator().manual_seed(config.split_seed)
    train = dataset.train_images
    if config.binarize == "static":
        train = draw_binary(train, generator)
    return replace(
        dataset, train_images=train, test_images=draw_binary(dataset.test_images, generator)
    )


def model_data(dataset: Dataset, config: DataConfig) -> ModelData:
    """Training, validation and test images of a run, binarized, the validation rows (if
    `val_split`) chosen by `split_seed` and taken out of the training set in their order."""
    data = binarized(dataset, config)
    labels = data.train_labels
    if not config.val_split:
        return ModelData(data.train_images, None, data.test_images, labels, None, data.test_labels)
    kept, held = split_indices(
        len(data.train_images), config.val_split, config.split_seed, "val_split"
    )
    return ModelData(
        data.train_images[kept], data.train_images[held], data.test_images,
        None if labels is None else labels[kept], None if labels is None else labels[held],
        data.test_labels,
    )  # fmt: skip
