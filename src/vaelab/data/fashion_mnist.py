"""Fashion-MNIST: found on disk (the Debian package, the user cache, a named folder) or downloaded
from the official address and checked against the published SHA-256 of each file; and the
reader of the four IDX files of the MNIST family's layout, which MNIST and KMNIST share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vaelab.data import download
from vaelab.data.dataset import Dataset
from vaelab.data.download import Opener, Remote, find_located
from vaelab.data.idx import read_idx_split
from vaelab.data.images import Images
from vaelab.errors import VaelabError

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# SHA-256 of the four official .gz files as published by the Fashion-MNIST authors.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
# Their sizes in bytes: a download is read no further.
FASHION_MNIST_SIZES = {
    "train-images-idx3-ubyte.gz": 26421880,
    "train-labels-idx1-ubyte.gz": 29515,
    "t10k-images-idx3-ubyte.gz": 4422102,
    "t10k-labels-idx1-ubyte.gz": 5148,
}
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

_APT_HINT = (
    "Install it with 'apt-get install -y dataset-fashion-mnist', or put the four IDX files in "
    "{folder} (or a folder given by data_dir)"
)


def default_cache_dir() -> Path:
    """Where downloads go: $XDG_CACHE_HOME/vaelab/fashion-mnist (~/.cache by default)."""
    return download.default_cache_dir("fashion-mnist")


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The file `stem` or `stem.gz` in `directory`, whichever exists.

    Anything by that name counts (a pipe, a directory, a broken link), so that reading it names
    what is wrong with it instead of calling it missing.
    """
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def missing_idx_files(directory: Path) -> list[str]:
    """Which of the four files of the MNIST family's layout `directory` lacks (as .gz names)."""
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    return [stem + ".gz" for stem in stems if find_idx_file(directory, stem) is None]


def locate_fashion_mnist(data_dir: str | Path | None = None, opener: Opener | None = None) -> Path:
    """Directory holding the four Fashion-MNIST IDX files, downloading them when none is found.

    Order: `data_dir`, `$VAELAB_DATA`, the user cache, the Debian package's directory, then a
    download into the user cache. A directory the user names must hold all four files.
    """
    named = [(data_dir, "data_dir"), (download.env_dir("fashion-mnist", True), "$VAELAB_DATA")]
    found = find_located(named, default_cache_dir(), SYSTEM_DATA_DIR, missing_idx_files)
    return found or download_fashion_mnist(default_cache_dir(), opener=opener)


def download_fashion_mnist(
    target: Path, opener: Opener | None = None, base_url: str = FASHION_MNIST_URL
) -> Path:
    """Download the four official files into `target`, verifying each SHA-256 before keeping it."""
    files = {
        name: Remote(digest, FASHION_MNIST_SIZES.get(name, 1 << 30))
        for name, digest in FASHION_MNIST_SHA256.items()
    }
    hint = _APT_HINT.format(folder=target)
    return download.download_files(target, files, base_url, opener, "Fashion-MNIST", hint)


def read_idx_layout(
    directory: Path,
    class_names: Sequence[str],
    name: str,
    stems: Mapping[str, tuple[str, str]] = FASHION_MNIST_FILES,
) -> Dataset:
    """The dataset `name` from the four IDX files of the MNIST family's layout in `directory`."""
    splits = {}
    for split, (images_stem, labels_stem) in stems.items():
        images_path = find_idx_file(directory, images_stem)
        labels_path = find_idx_file(directory, labels_stem)
        if images_path is None or labels_path is None:
            raise VaelabError(f"{directory}: lacks {', '.join(missing_idx_files(directory))}")
        splits[split] = read_idx_split(images_path, labels_path)
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise VaelabError(
            f"{directory}: train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}"
        )
    shape = (1, int(train_images.shape[1]), int(train_images.shape[2]))
    return Dataset(
        train_images=Images.of(train_images, shape, f"{name} training images"),
        train_labels=torch.from_numpy(train_labels.astype(np.int64)),
        test_images=Images.of(test_images, shape, f"{name} test images"),
        test_labels=torch.from_numpy(test_labels.astype(np.int64)),
        image_shape=(int(train_images.shape[1]), int(train_images.shape[2])),
        class_names=tuple(class_names),
        source=f"{name} ({directory})",
        format="idx",
    )


def load_fashion_mnist(data_dir: str | Path | None = None, opener: Opener | None = None) -> Dataset:
    """Fashion-MNIST's 60,000 training and 10,000 test images, found or downloaded."""
    directory = locate_fashion_mnist(data_dir, opener=opener)
    return read_idx_layout(directory, FASHION_MNIST_CLASSES, "fashion-mnist")
