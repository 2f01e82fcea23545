"""The data a DataConfig names: the built-in dataset, or the tutorial's CSV files."""

from __future__ import annotations

from vaelab.config import DataConfig
from vaelab.data.csvfile import load_csv_dataset
from vaelab.data.dataset import Dataset
from vaelab.data.fashion_mnist import Opener, load_fashion_mnist
from vaelab.errors import VaelabError

DATASETS = ("fashion-mnist",)


def is_builtin_name(source: str) -> bool:
    """Whether `source` names a built-in dataset (rather than a path)."""
    return source in DATASETS


def load_dataset(config: DataConfig | None = None, opener: Opener | None = None) -> Dataset:
    """Load the dataset a `DataConfig` names (Fashion-MNIST by default)."""
    config = config or DataConfig()
    if config.source is not None:
        from vaelab.data.sources import load_source

        return load_source(config, opener=opener)
    if config.train_csv and config.test_csv:
        return load_csv_dataset(config.train_csv, config.test_csv)
    if config.dataset not in DATASETS:
        raise VaelabError(
            f"unknown dataset {config.dataset!r}; built in: {', '.join(DATASETS)}",
            parameters=("dataset",),
        )
    return load_fashion_mnist(config.data_dir, opener=opener)
