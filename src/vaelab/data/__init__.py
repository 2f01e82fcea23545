"""Data: readers for the image formats vaelab takes, and the datasets it loads by name."""

from vaelab.data.arrays import as_dataset, load_array_file, read_npy, read_npz
from vaelab.data.builtin import builtin_datasets, load_builtin
from vaelab.data.csvfile import load_csv_dataset, load_csv_source, read_csv
from vaelab.data.dataset import Dataset, require_image_size, to_unit_float
from vaelab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    SYSTEM_DATA_DIR,
    download_fashion_mnist,
    find_idx_file,
    load_fashion_mnist,
    locate_fashion_mnist,
)
from vaelab.data.folder import load_folder
from vaelab.data.idx import is_idx_file, load_idx_source, read_idx, read_idx_split
from vaelab.data.images import Images
from vaelab.data.registry import DATASETS, load_dataset
from vaelab.data.sources import load_source, prepare_source

__all__ = [
    "DATASETS", "FASHION_MNIST_CLASSES", "SYSTEM_DATA_DIR", "Dataset", "builtin_datasets",
    "download_fashion_mnist", "find_idx_file", "is_idx_file", "load_builtin", "load_csv_source",
    "load_idx_source", "load_csv_dataset", "load_dataset", "load_fashion_mnist",
    "locate_fashion_mnist", "read_csv", "read_idx", "read_idx_split", "require_image_size",
    "to_unit_float",
    "as_dataset", "load_array_file", "load_folder", "load_source", "read_npy", "read_npz",
    "Images", "prepare_source",
]  # fmt: skip
