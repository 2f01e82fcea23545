"""What a run checks and records before its first step: the training set fits the batch (and
early stopping has a validation set to watch), the run fits in the device's memory, a model given
by the user fits the images, a conditional model's class count, and what config.json records
beside the config."""

from __future__ import annotations

import platform
from dataclasses import fields, replace

import torch

from vaelab._version import __version__
from vaelab.config import RunConfig
from vaelab.data import Dataset
from vaelab.data.dataset import test_fingerprint
from vaelab.data.model_data import ModelData, model_data
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.training.checkpoint import Layout
from vaelab.training.events import EpochMetrics
from vaelab.training.footprint import check_memory, estimate_footprint, given_model_footprint
from vaelab.training.precision import resolve_precision


def run_layout(config: RunConfig, train_images: int, steps_per_epoch: int) -> Layout:
    """The numbers a checkpoint of this run must agree with."""
    row = {f.name: 0 if f.type == "int" else 0.0 for f in fields(EpochMetrics)}
    return Layout(config.train.epochs, steps_per_epoch, train_images, row)


def check_fits(config: RunConfig, data: ModelData) -> None:
    if config.train.batch_size > len(data.train):
        held = "" if data.val is None else f", after {len(data.val)} held out for validation"
        raise VaelabError(
            f"batch_size {config.train.batch_size} is larger than the training set "
            f"({len(data.train)} images{held})",
            parameters=("batch_size",),
        )
    if config.train.early_stopping and data.val is None:
        raise VaelabError(
            "early_stopping needs a validation set to watch: give val_split too",
            parameters=("early_stopping", "val_split"),
        )


def check_memory_fits(
    config: RunConfig, data: ModelData, device: torch.device, saves: bool, model: VAE | None = None
) -> None:
    """Refuse in one line, before the model is built, a run the device's free memory cannot hold
    (`saves`: checkpoints are written; `model`: one the user built)."""
    if model is not None:
        footprint = given_model_footprint(model, saves)
    else:
        precision = resolve_precision(config.train.precision, device)
        config = replace(config, train=replace(config.train, precision=precision))
        largest = max(len(data.test), 0 if data.val is None else len(data.val))
        footprint = estimate_footprint(config, largest, saves)
    check_memory(footprint, device)


def run_info(
    config: RunConfig, dataset: Dataset, device: torch.device, data: ModelData | None = None
) -> dict[str, object]:
    """What config.json records beside the config itself."""
    data = data or model_data(dataset, config.data)
    return {
        "dataset": {
            "source": dataset.source,
            "format": dataset.format,
            "train_images": len(data.train),
            "val_images": 0 if data.val is None else len(data.val),
            "test_images": len(data.test),
            "image_shape": list(dataset.image_shape),
            "channels": dataset.channels,
            "labelled": dataset.labelled,
            "class_names": list(dataset.class_names),
            "test_sha256": test_fingerprint(dataset),
        },
        "device": str(device),
        "precision": resolve_precision(config.train.precision, device),
        "versions": {
            "vaelab": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def check_model_fits(model: VAE, dataset: Dataset) -> None:
    if model.config.input_dim != dataset.input_dim:
        raise VaelabError(
            f"the model takes {model.config.input_dim} values per image, the data has "
            f"{dataset.input_dim} ({dataset.channels}x{dataset.image_shape[0]}x"
            f"{dataset.image_shape[1]}); build it with ModelConfig(input_dim="
            f"{dataset.input_dim}, image_shape={dataset.shape})",
            parameters=("model",),
        )


def class_count(config: RunConfig, dataset: Dataset) -> int:
    """How many classes a conditional model is built for: the data's; 0 when unconditional."""
    if not config.model.conditional:
        return config.model.classes
    if dataset.train_labels is None:
        raise VaelabError(
            f"conditional needs labelled images; {dataset.source} has no labels",
            parameters=("conditional",),
        )
    splits = (dataset.train_labels, dataset.test_labels)
    highest = max(int(labels.max()) for labels in splits if labels is not None and len(labels))
    return max(len(dataset.class_names), highest + 1)
