"""Image datasets: Fashion-MNIST IDX files (found, or downloaded and verified) or a CSV file.

Pixels become float32 in [0, 1]; each split lives in one tensor, and batches are slices of a
permutation of it.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.config import DataConfig
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

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

Opener = Callable[[str], object]


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as float32 tensors in [0, 1] with integer labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    source: str

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


# ---------------------------------------------------------------- IDX


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed), checking its magic number, dtype and size."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise VaelabError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise VaelabError(f"{path}: unknown IDX data type code 0x{raw[2]:02x}")
    ndim = raw[3]
    if ndim == 0:
        raise VaelabError(f"{path}: IDX header declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise VaelabError(f"{path}: file ends inside the IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_end
    if actual != expected:
        raise VaelabError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) "
            f"but the file holds {actual} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=handle) as unzipped:
                    return unzipped.read()
            return handle.read()
    except FileNotFoundError:
        raise VaelabError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise VaelabError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise VaelabError(f"{path}: permission denied") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise VaelabError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_idx_split(
    images_path: str | Path, labels_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file (N x H x W, uint8) and its labels file (N), checking they agree."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise VaelabError(
            f"{images_path}: expected uint8 images of shape N x H x W, "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise VaelabError(
            f"{labels_path}: expected uint8 labels of shape N, "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise VaelabError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


# ---------------------------------------------------------------- CSV


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255.

    Every field, the label included, must be an integer in 0-255 (IDX labels are uint8 too).

    Returns (images as uint8 N x D, labels as int64 N). D must be a square.
    """
    path = Path(path)
    text = _read_text(path)
    header, _, body = text.partition("\n")
    columns = _check_csv_header(path, header.rstrip("\r"))
    values = _parse_csv_fast(body, columns)
    if values is None:
        _raise_first_csv_problem(path, body, columns)
        raise VaelabError(f"{path}: could not parse the CSV rows")  # pragma: no cover
    if len(values) == 0:
        raise VaelabError(f"{path}: no data rows after the header")
    labels, pixels = values[:, 0], values[:, 1:]
    if not ((values >= 0) & (values <= 255)).all():
        _raise_first_csv_problem(path, body, columns)
    return pixels.astype(np.uint8), labels.astype(np.int64)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VaelabError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise VaelabError(f"{path}: is a directory, expected a CSV file") from None
    except PermissionError:
        raise VaelabError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise VaelabError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None


def _check_csv_header(path: Path, header: str) -> int:
    if not header.strip():
        raise VaelabError(f"{path}: empty file, expected a header line 'label,pixel1,...'")
    names = [name.strip() for name in header.split(",")]
    if names[0].lower() != "label" or any(_is_number(name) for name in names):
        raise VaelabError(
            f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' "
            f"but found '{header[:40]}'"
        )
    pixels = len(names) - 1
    side = math.isqrt(pixels)
    if pixels == 0 or side * side != pixels:
        raise VaelabError(
            f"{path}: line 1: {pixels} pixel columns is not a square image size (e.g. 784 = 28x28)"
        )
    return len(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ASCII only: Python's int() would also take '1_0' and non-ASCII digits, NumPy's parser would not.
_INTEGER_FIELD = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*")
_NOT_INTEGER_TEXT = re.compile(r"[^0-9,+\- \t\r\n]")


def _parse_csv_fast(body: str, columns: int) -> np.ndarray | None:
    """Parse all rows in one C call; None when anything is off, so the slow path can say where."""
    rows = [line for line in body.replace("\r", "").split("\n") if line.strip()]
    if not rows:
        return np.zeros((0, columns), dtype=np.int64)
    if _NOT_INTEGER_TEXT.search(body):
        return None
    # Only digits, signs, commas and blanks are left, so integers are the only thing to parse;
    # int64 parsing is also about 6x faster than float64 here. Malformed fields stop the parse
    # early, which the size check catches.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flat = np.fromstring(",".join(rows), dtype=np.int64, sep=",")
        except ValueError:
            return None
    if flat.size != len(rows) * columns:
        return None
    if any(row.count(",") != columns - 1 for row in rows):
        return None
    return flat.reshape(len(rows), columns)


def _raise_first_csv_problem(path: Path, body: str, columns: int) -> None:
    for offset, line in enumerate(body.split("\n")):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        line_no = offset + 2
        fields_ = line.split(",")
        if len(fields_) != columns:
            raise VaelabError(
                f"{path}: line {line_no}: expected {columns} columns, found {len(fields_)}"
            )
        for col, raw in enumerate(fields_, start=1):
            what = "label" if col == 1 else f"pixel{col - 1}"
            if not _INTEGER_FIELD.fullmatch(raw):
                raise VaelabError(
                    f"{path}: line {line_no}, column {col} ({what}): '{raw[:20]}' is not an integer"
                )
            value = int(raw)
            if not 0 <= value <= 255:  # labels share the IDX format's uint8 range
                raise VaelabError(
                    f"{path}: line {line_no}, column {col} ({what}): {value} is outside 0-255"
                )


# ---------------------------------------------------------------- locating and downloading


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab" / "fashion-mnist"


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The file `stem` or `stem.gz` in `directory`, whichever exists."""
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
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
        (data_dir, "--data-dir"),
        (os.environ.get("VAELAB_DATA"), "$VAELAB_DATA"),
    ):
        if explicit:
            directory = Path(explicit)
            if not directory.is_dir():
                raise VaelabError(f"{directory}: data directory ({origin}) does not exist")
            missing = _missing_files(directory)
            if missing:
                raise VaelabError(
                    f"{directory}: data directory ({origin}) lacks {', '.join(missing)}"
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
                    f"IDX files in {destination.parent} (or a folder given by --data-dir)"
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
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


# ---------------------------------------------------------------- building a Dataset


def to_unit_float(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N x ...) to a float32 N x D tensor in [0, 1]."""
    flat = np.array(images.reshape(len(images), -1), dtype=np.float32)  # a writable copy
    return torch.from_numpy(flat).div_(255.0)


def load_fashion_mnist(data_dir: str | Path | None = None, opener: Opener | None = None) -> Dataset:
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


def load_csv_dataset(train_csv: str | Path, test_csv: str | Path) -> Dataset:
    train_pixels, train_labels = read_csv(train_csv)
    test_pixels, test_labels = read_csv(test_csv)
    if train_pixels.shape[1] != test_pixels.shape[1]:
        raise VaelabError(
            f"{test_csv}: {test_pixels.shape[1]} pixel columns but {train_csv} has "
            f"{train_pixels.shape[1]}"
        )
    side = math.isqrt(train_pixels.shape[1])
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    names = FASHION_MNIST_CLASSES if n_classes <= 10 else tuple(str(i) for i in range(n_classes))
    return Dataset(
        train_images=to_unit_float(train_pixels),
        train_labels=torch.from_numpy(train_labels),
        test_images=to_unit_float(test_pixels),
        test_labels=torch.from_numpy(test_labels),
        image_shape=(side, side),
        class_names=names,
        source=f"csv ({train_csv}, {test_csv})",
    )


def require_image_size(dataset: Dataset, input_dim: int, owner: str | Path) -> None:
    """Refuse data whose images do not have the `input_dim` pixels the model of `owner` expects."""
    if dataset.input_dim != input_dim:
        height, width = dataset.image_shape
        raise VaelabError(
            f"{owner}: the model expects {input_dim} pixels per image but {dataset.source} has "
            f"{dataset.input_dim} ({height}x{width})"
        )


def load_dataset(config: DataConfig | None = None, opener: Opener | None = None) -> Dataset:
    """Load the dataset a `DataConfig` names."""
    config = config or DataConfig()
    if config.train_csv and config.test_csv:
        return load_csv_dataset(config.train_csv, config.test_csv)
    if config.dataset != "fashion-mnist":
        raise VaelabError(f"unknown dataset {config.dataset!r}; built in: fashion-mnist")
    return load_fashion_mnist(config.data_dir, opener=opener)
