"""The data a DataConfig names: a source (a path, or a built-in dataset's name), a built-in
dataset, or the tutorial's CSV files."""

from __future__ import annotations

from vaelab.config import DataConfig
from vaelab.data.builtin import BUILTINS, load_builtin
from vaelab.data.dataset import Dataset
from vaelab.data.download import Opener

DATASETS = tuple(BUILTINS)  # fashion-mnist, mnist, kmnist, cifar10


def is_builtin_name(source: str) -> bool:
    """Whether `source` names a built-in dataset (rather than a path)."""
    return source in DATASETS


def load_dataset(config: DataConfig | None = None, opener: Opener | None = None) -> Dataset:
    """Load the dataset a `DataConfig` names (Fashion-MNIST by default): its source, else its
    CSV files (read as a CSV source is), else the built-in `dataset` (from `data_dir` when
    given)."""
    config = config or DataConfig()
    if config.source is not None:
        from vaelab.data.sources import load_source

        return load_source(config, opener=opener)
    if config.train_csv and config.test_csv:
        from vaelab.data.sources import load_csv_pair

        return load_csv_pair(config)
    return load_builtin(config.dataset, config, opener=opener)
