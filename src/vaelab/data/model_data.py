"""What a model trains, validates and is tested on: the dataset binarized as the config says, and
the validation rows held out of the training set (both seeded by `DataConfig.split_seed`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vaelab._resources import require_memory
from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.images import Images
from vaelab.data.pixels import unit_float
from vaelab.data.splits import split_indices


@dataclass(frozen=True)
class ModelData:
    """The images of a run: training, validation (None without a split) and test rows, and
    their labels (None for unlabelled data). The validation rows are a view of the training
    set's pixels, nothing copied."""

    train: Images
    val: Images | None
    test: Images
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


def drawn_binary(images: Images, generator: torch.Generator) -> Images:
    """`images` drawn once as x ~ Bernoulli(pixels), kept as bool (1 byte per value).

    Drawn in blocks from `generator`: torch draws the same uniforms in blocks of rows as in one
    call over all of them, so the values are those `draw_binary` gives the float32 tensor.
    """
    require_memory(len(images) * images.dim, f"{images.where}: binarizing {len(images):,} images")
    drawn = torch.empty((len(images), images.dim), dtype=torch.bool)
    for rows in images.block_ranges():
        pixels = unit_float(images.stored(rows))
        drawn[rows] = torch.rand(pixels.shape, generator=generator) < pixels
    return Images(drawn.view(len(images), *images.image_shape), where=images.where, checked=True)


def binarized(dataset: Dataset, config: DataConfig, train: bool = True) -> Dataset:
    """The dataset as the model sees it between epochs.

    'static': the training and then the test images drawn once from `split_seed`; 'dynamic': the
    test images drawn once from `split_seed` (training batches are drawn afresh, in the loop), so
    every evaluation of a run sees the same binary test set; 'none': unchanged. With `train`
    False only the test images are drawn (the training images are left as they are; under
    'static' their uniforms are drawn in blocks and dropped, so the test draws are the same).
    """
    if config.binarize == "none":
        return dataset
    generator = torch.Generator().manual_seed(config.split_seed)
    train_images = dataset.train_images
    if config.binarize == "static" and train:
        train_images = drawn_binary(train_images, generator)
    elif config.binarize == "static":
        _skip_draws(train_images, generator)
    test_images = drawn_binary(dataset.test_images, generator)
    return replace(dataset, train_images=train_images, test_images=test_images)


def _skip_draws(images: Images, generator: torch.Generator) -> None:
    """Advance `generator` past the uniforms `drawn_binary(images)` would draw."""
    for rows in images.block_ranges():
        torch.rand((rows.stop - rows.start, images.dim), generator=generator)


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
        data.train_images.take(kept), data.train_images.take(held), data.test_images,
        None if labels is None else labels[kept], None if labels is None else labels[held],
        data.test_labels,
    )  # fmt: skip
