"""The built-in datasets: fashion-mnist, mnist, kmnist and cifar10, found on disk or downloaded
once from their official addresses with every file's SHA-256 checked.

Each is looked up in `DataConfig.data_dir` (when given, for whichever dataset is named), then
``$VAELAB_DATA``, the user cache ``$XDG_CACHE_HOME/vaelab/<name>`` and the system folder
``/usr/share/datasets/<name>``; when none holds its files they are downloaded into the cache.
The checksums are those the datasets' publishers give, as recorded by TensorFlow Datasets'
`url_checksums` (and torchvision for MNIST).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from vaelab.config import DataConfig
from vaelab.data import download
from vaelab.data.cifar10 import CIFAR10_ARCHIVE, CIFAR10_CLASSES, cifar10_found, read_cifar10
from vaelab.data.dataset import Dataset
from vaelab.data.download import Opener, Remote, find_located
from vaelab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SHA256,
    FASHION_MNIST_SIZES,
    FASHION_MNIST_URL,
    missing_idx_files,
    read_idx_layout,
)
from vaelab.data.images import Images
from vaelab.errors import VaelabError

SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": Remote(
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422
    ),  # noqa: E501
    "train-labels-idx1-ubyte.gz": Remote(
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881
    ),  # noqa: E501
    "t10k-images-idx3-ubyte.gz": Remote(
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877
    ),  # noqa: E501
    "t10k-labels-idx1-ubyte.gz": Remote(
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542
    ),  # noqa: E501
}
KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
KMNIST_FILES = {
    "train-images-idx3-ubyte.gz": Remote(
        "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", 18165135
    ),  # noqa: E501
    "train-labels-idx1-ubyte.gz": Remote(
        "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", 29497
    ),  # noqa: E501
    "t10k-images-idx3-ubyte.gz": Remote(
        "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", 3041136
    ),  # noqa: E501
    "t10k-labels-idx1-ubyte.gz": Remote(
        "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", 5120
    ),  # noqa: E501
}
# kmnist_classmap.csv: お き す つ な は ま や れ を, romanised.
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_FILES = {
    CIFAR10_ARCHIVE: Remote("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171),  # noqa: E501
}  # fmt: skip
FASHION_MNIST_FILES = {
    name: Remote(digest, FASHION_MNIST_SIZES[name]) for name, digest in FASHION_MNIST_SHA256.items()
}


@dataclass(frozen=True)
class Builtin:
    """One built-in dataset: what it is, where it is published, and how its files are read."""

    name: str
    description: str
    shape: tuple[int, int, int]  # (C, H, W)
    url: str
    files: Mapping[str, Remote]
    missing: Callable[[Path], list[str]]  # the files a folder lacks
    read: Callable[[Path], Dataset]


class BuiltinInfo(NamedTuple):
    """A built-in dataset as `builtin_datasets` lists it."""

    name: str  # what DataConfig(dataset=...) takes
    description: str
    shape: tuple[int, int, int]  # one image's (C, H, W)
    found: str  # the folder it is read from now, or where it would be downloaded from


def _idx_reader(name: str, class_names: tuple[str, ...]) -> Callable[[Path], Dataset]:
    return lambda directory: read_idx_layout(directory, class_names, name)


def _read_cifar10(directory: Path) -> Dataset:
    where = cifar10_found(directory)
    if where is None:
        raise VaelabError(f"{directory}: lacks {CIFAR10_ARCHIVE}")
    train_images, train_labels, test_images, test_labels = read_cifar10(where)
    return Dataset(
        train_images=Images.of(train_images, (3, 32, 32), "cifar10 training images"),
        train_labels=torch.from_numpy(train_labels),
        test_images=Images.of(test_images, (3, 32, 32), "cifar10 test images"),
        test_labels=torch.from_numpy(test_labels),
        image_shape=(32, 32),
        channels=3,
        class_names=CIFAR10_CLASSES,
        source=f"cifar10 ({where})",
        format="cifar10",
    )


def _cifar10_missing(directory: Path) -> list[str]:
    return [] if cifar10_found(directory) is not None else [CIFAR10_ARCHIVE]


BUILTINS: dict[str, Builtin] = {
    "fashion-mnist": Builtin(
        "fashion-mnist", "Zalando's clothing images, 60,000 train / 10,000 test, 10 classes",
        (1, 28, 28), FASHION_MNIST_URL, FASHION_MNIST_FILES, missing_idx_files,
        _idx_reader("fashion-mnist", FASHION_MNIST_CLASSES),
    ),
    "mnist": Builtin(
        "mnist", "handwritten digits, 60,000 train / 10,000 test, 10 classes",
        (1, 28, 28), MNIST_URL, MNIST_FILES, missing_idx_files,
        _idx_reader("mnist", MNIST_CLASSES),
    ),
    "kmnist": Builtin(
        "kmnist", "Kuzushiji-MNIST, cursive Japanese hiragana, 60,000 train / 10,000 test, "
        "10 classes", (1, 28, 28), KMNIST_URL, KMNIST_FILES, missing_idx_files,
        _idx_reader("kmnist", KMNIST_CLASSES),
    ),
    "cifar10": Builtin(
        "cifar10", "CIFAR-10 colour photographs, 50,000 train / 10,000 test, 10 classes",
        (3, 32, 32), CIFAR10_URL, CIFAR10_FILES, _cifar10_missing, _read_cifar10,
    ),
}  # fmt: skip


def builtin(name: str) -> Builtin:
    """The built-in dataset `name`; one line listing the names for any other."""
    found = BUILTINS.get(name)
    if found is None:
        raise VaelabError(
            f"unknown dataset {name!r}; built in: {', '.join(BUILTINS)}", parameters=("dataset",)
        )
    return found


def _system_dir(name: str) -> Path:
    return SYSTEM_DATASETS_DIR / name


def find_builtin(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding dataset `name` now (`data_dir`, $VAELAB_DATA, the cache, the system
    folder), or None when it would have to be downloaded."""
    spec = builtin(name)
    named = [
        (data_dir, "data_dir"),
        (download.env_dir(name, name == "fashion-mnist"), "$VAELAB_DATA"),
    ]
    return find_located(named, download.default_cache_dir(name), _system_dir(name), spec.missing)


def locate_builtin(
    name: str, data_dir: str | Path | None = None, opener: Opener | None = None
) -> Path:
    """The folder holding dataset `name`, downloading it into the user cache when none does."""
    found = find_builtin(name, data_dir)
    if found is not None:
        return found
    return download_builtin(name, download.default_cache_dir(name), opener)


def download_builtin(name: str, target: Path, opener: Opener | None = None) -> Path:
    """Download dataset `name`'s files into `target`, each kept only when its SHA-256 matches."""
    spec = builtin(name)
    hint = (
        f"Put its files ({', '.join(spec.files)}) in {target}, in /usr/share/datasets/{name}, "
        "or in a folder given by data_dir"
    )
    return download.download_files(target, spec.files, spec.url, opener, name, hint)


def load_builtin(
    name: str, config: DataConfig | None = None, opener: Opener | None = None
) -> Dataset:
    """The built-in dataset `name`, from `config.data_dir` when given, else found or downloaded;
    `config.class_names` renames its classes (as many names as it has), `config.labels` False
    drops its labels, and an `image_size` other than its own is refused (built-in datasets are
    not resized)."""
    spec = builtin(name)
    if config is not None and config.image_size and tuple(config.image_size) != spec.shape[1:]:
        height, width = config.image_size
        raise VaelabError(
            f"{name}: images are {spec.shape[1]}x{spec.shape[2]}, image_size says "
            f"{height}x{width}; built-in datasets are not resized",
            parameters=("image_size",),
        )
    directory = locate_builtin(name, config.data_dir if config else None, opener)
    dataset = spec.read(directory)
    if config is not None and not config.labels:
        return replace(dataset, train_labels=None, test_labels=None, class_names=())
    if config is None or not config.class_names:
        return dataset
    if len(config.class_names) != len(dataset.class_names):
        raise VaelabError(
            f"{name}: class_names names {len(config.class_names)} classes but the dataset has "
            f"{len(dataset.class_names)}",
            parameters=("class_names",),
        )
    return replace(dataset, class_names=tuple(config.class_names))


def builtin_datasets() -> list[BuiltinInfo]:
    """Each built-in dataset: its name, description, image shape (C, H, W), and where it is found
    now (or the address it is downloaded from on first use)."""
    infos = []
    for name, spec in BUILTINS.items():
        try:
            found = find_builtin(name)
        except VaelabError as exc:  # $VAELAB_DATA names a folder that lacks it
            where = str(exc)
        else:
            address = spec.url + next(iter(spec.files)) if len(spec.files) == 1 else spec.url
            where = str(found) if found else f"download from {address} on first use"
        infos.append(BuiltinInfo(name, spec.description, spec.shape, where))
    return infos
