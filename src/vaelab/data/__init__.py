"""Data: readers for the image formats vaelab takes, and the datasets it loads by name."""

from vaelab.data.csvfile import load_csv_dataset, read_csv
from vaelab.data.dataset import Dataset, require_image_size, to_unit_float
from vaelab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    SYSTEM_DATA_DIR,
    download_fashion_mnist,
    find_idx_file,
    load_fashion_mnist,
    locate_fashion_mnist,
)
from vaelab.data.idx import read_idx, read_idx_split
from vaelab.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS", "FASHION_MNIST_CLASSES", "SYSTEM_DATA_DIR", "Dataset", "download_fashion_mnist",
    "find_idx_file", "load_csv_dataset", "load_dataset", "load_fashion_mnist",
    "locate_fashion_mnist", "read_csv", "read_idx", "read_idx_split", "require_image_size",
    "to_unit_float",
]  # fmt: skip
