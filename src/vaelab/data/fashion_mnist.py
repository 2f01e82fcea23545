"""Fashion-MNIST: found on disk (the Debian package, the user cache, a named folder) or downloaded
from the official address and checked against the published SHA-256 of each file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vaelab._io import open_regular
from vaelab.data.dataset import Dataset, to_unit_float
from vaelab.data.idx import read_idx_split
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
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

Opener = Callable[[str], object]


def default_cache_dir() -> Path:
    """Where downloads go: $XDG_CACHE_HOME/vaelab/fashion-mnist (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab" / "fashion-mnist"


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


def _missing_files(directory: Path) -> list[str]:
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    return [stem + ".gz" for stem in stems if find_idx_file(directory, stem) is None]


def locate_fashion_mnist(data_dir: str | Path | None = None, opener: Opener | None = None) -> Path:
    """Directory holding the four Fashion-MNIST IDX files, downloading them when none is found.

    Order: `data_dir`, `$VAELAB_DATA`, the user cache, the Debian package's directory, then a
    download into the user cache. A directory the user names must hold all four files.
    """
    for explicit, origin in (
        (data_dir, "data_dir"),
        (os.environ.get("VAELAB_DATA"), "$VAELAB_DATA"),
    ):
        if explicit:
            directory = Path(explicit)
            if not directory.is_dir():
                raise VaelabError(
                    f"{directory}: data directory ({origin}) does not exist",
                    parameters=("data_dir",),
                )
            missing = _missing_files(directory)
            if missing:
                raise VaelabError(
                    f"{directory}: data directory ({origin}) lacks {', '.join(missing)}",
                    parameters=("data_dir",),
                )
            return directory
    for directory in (default_cache_dir(), SYSTEM_DATA_DIR):
        if directory.is_dir() and not _missing_files(directory):
            return directory
    return download_fashion_mnist(default_cache_dir(), opener=opener)


def download_fashion_mnist(
    target: Path, opener: Opener | None = None, base_url: str = FASHION_MNIST_URL
) -> Path:
    """Download the four official files into `target`, verifying each SHA-256 before keeping it."""
    opener = opener or (lambda url: urllib.request.urlopen(url, timeout=60))
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in FASHION_MNIST_SHA256.items():
        destination = target / name
        if destination.is_file() and _sha256(destination) == digest:
            continue
        _download_verified(opener, base_url + name, destination, digest)
    return target


def _download_verified(opener: Opener, url: str, destination: Path, digest: str) -> None:
    handle, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=destination.name, suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with opener(url) as response:  # type: ignore[attr-defined]
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as exc:
                raise VaelabError(
                    f"Fashion-MNIST was not found locally and downloading {url} failed ({exc}). "
                    "Install it with 'apt-get install -y dataset-fashion-mnist', or put the four "
                    f"IDX files in {destination.parent} (or a folder given by data_dir)",
                    parameters=("data_dir",),
                ) from None
        actual = _sha256(Path(temp_name))
        if actual != digest:
            raise VaelabError(
                f"{url}: SHA-256 mismatch (expected {digest}, got {actual}); "
                "the download was discarded"
            )
        os.replace(temp_name, destination)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open_regular(path, "a Fashion-MNIST file") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def load_fashion_mnist(data_dir: str | Path | None = None, opener: Opener | None = None) -> Dataset:
    """Fashion-MNIST's 60,000 training and 10,000 test images, found or downloaded."""
    directory = locate_fashion_mnist(data_dir, opener=opener)
    splits = {}
    for split, (images_stem, labels_stem) in FASHION_MNIST_FILES.items():
        images_path = find_idx_file(directory, images_stem)
        labels_path = find_idx_file(directory, labels_stem)
        assert images_path is not None and labels_path is not None
        splits[split] = read_idx_split(images_path, labels_path)
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise VaelabError(
            f"{directory}: train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}"
        )
    return Dataset(
        train_images=to_unit_float(train_images),
        train_labels=torch.from_numpy(train_labels.astype(np.int64)),
        test_images=to_unit_float(test_images),
        test_labels=torch.from_numpy(test_labels.astype(np.int64)),
        image_shape=(int(train_images.shape[1]), int(train_images.shape[2])),
        class_names=FASHION_MNIST_CLASSES,
        source=f"fashion-mnist ({directory})",
    )
