"""IDX files (the MNIST family's format): raw or gzip-compressed, every header field checked.

The header is read first and the payload size it declares is checked against the file, and
against the limit on reads (see `vaelab._io`), before anything is allocated; a gzip stream is
decompressed in chunks and never past the declared size, so a gzip bomb stops at once.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from vaelab._io import (
    FILE_LIMIT,
    open_regular,
    over_limit,
    read_error,
    read_limit,
    size_words,
    too_large,
)
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.config import DataConfig
    from vaelab.data.dataset import Dataset

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_DIMS = 4
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 16 << 20
_DRAIN = 64 << 20  # how far past the declared size a gzip stream is read to find corruption


def read_idx(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed), checking its magic number, dtype and size.

    `limit` caps the bytes of data (decompressed) and of the file itself; it defaults to
    `vaelab._io.FILE_LIMIT`, and ``$VAELAB_MAX_READ_BYTES`` replaces it when set.
    """
    path = Path(path)
    most = read_limit(FILE_LIMIT if limit is None else limit)
    with open_regular(path, "an IDX file") as handle:
        try:
            return _read_idx(path, handle, most)
        except (EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
                raise read_error(path, exc, "an IDX file") from None
            raise VaelabError(f"{path}: corrupt or truncated gzip data ({exc})") from None
        except MemoryError:
            raise VaelabError(f"{path}: not enough memory to hold the IDX data") from None


def _read_idx(path: Path, handle: IO[bytes], most: int) -> np.ndarray:
    file_size = os.fstat(handle.fileno()).st_size
    if file_size > most:
        raise too_large(path, f"the file's {size_words(file_size)} ({file_size} bytes)", most)
    compressed = handle.read(2) == _GZIP_MAGIC
    handle.seek(0)
    stream: IO[bytes] = gzip.GzipFile(fileobj=handle) if compressed else handle  # type: ignore[assignment]
    head = _read_up_to(stream, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise VaelabError(f"{path}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(head[2])
    if dtype is None:
        raise VaelabError(f"{path}: unknown IDX data type code 0x{head[2]:02x}")
    ndim = head[3]
    if ndim == 0:
        raise VaelabError(f"{path}: IDX header declares 0 dimensions")
    if ndim > MAX_IDX_DIMS:
        raise VaelabError(
            f"{path}: IDX header declares {ndim} dimensions; vaelab reads 1 to {MAX_IDX_DIMS}"
        )
    dims = _read_up_to(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise VaelabError(f"{path}: file ends inside the IDX header")
    shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    expected = math.prod(shape) * dtype.itemsize
    declared = f"IDX header declares shape {shape} ({expected} bytes)"
    if expected > most:
        raise VaelabError(f"{path}: {declared}, {over_limit(most)}")
    if not compressed:
        actual = file_size - (4 + 4 * ndim)
        if file_size and actual != expected:
            raise _size_mismatch(path, declared, f"{max(actual, 0)} bytes")
    data = _read_up_to(stream, expected + 1)
    if len(data) > expected:
        if compressed:  # corrupt data can inflate to more bytes too: let a bounded read tell
            _drain(stream, _DRAIN)
        raise _size_mismatch(path, declared, f"more than {expected} bytes")
    if len(data) < expected:
        raise _size_mismatch(path, declared, f"{len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _size_mismatch(path: Path, declared: str, holds: str) -> VaelabError:
    return VaelabError(f"{path}: {declared} but the file holds {holds} of data")


def _drain(stream: IO[bytes], most: int) -> None:
    """Read on through at most `most` bytes, one chunk at a time, kept nowhere; a gzip stream
    checks its CRC at its end, and a corrupt one raises."""
    while most > 0:
        chunk = stream.read(min(_CHUNK, most))
        if not chunk:
            return
        most -= len(chunk)


def _read_up_to(stream: IO[bytes], n: int) -> bytearray:
    """Up to `n` bytes of `stream`, read in chunks, so memory follows what the file really holds."""
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(_CHUNK, n - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def idx_header(path: str | Path) -> tuple[np.dtype[Any], tuple[int, ...]] | None:
    """(dtype, shape) an IDX file's header declares, reading only the header (gzip or raw); None
    when the file does not start like an IDX file. The data itself is not checked here."""
    path = Path(path)
    with open_regular(path, "an IDX file") as handle:
        try:
            compressed = handle.read(2) == _GZIP_MAGIC
            handle.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=handle) if compressed else handle  # type: ignore[assignment]
            head = _read_up_to(stream, 4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
                return None
            if not 1 <= head[3] <= MAX_IDX_DIMS:
                return None
            dims = _read_up_to(stream, 4 * head[3])
        except (EOFError, OSError, zlib.error):
            return None
    if len(dims) < 4 * head[3]:
        return None
    shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))
    return _IDX_DTYPES[head[2]], shape


def is_idx_file(path: str | Path) -> bool:
    """Whether `path` is a regular file whose first bytes are an IDX header (gzip or raw)."""
    try:
        return idx_header(path) is not None
    except VaelabError:
        return False


def read_idx_images(path: str | Path) -> np.ndarray:
    """An IDX images file: uint8, N x H x W, at least one image of at least 1x1 pixels."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise VaelabError(
            f"{path}: expected uint8 images of shape N x H x W, "
            f"got {images.dtype} of shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise VaelabError(f"{path}: holds 0 images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise VaelabError(
            f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels; expected at least 1x1"
        )
    return images


def read_idx_labels(path: str | Path, images_path: str | Path, count: int) -> np.ndarray:
    """An IDX labels file: uint8, one label for each of the `count` images of `images_path`."""
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise VaelabError(
            f"{path}: expected uint8 labels of shape N, got {labels.dtype} of shape {labels.shape}"
        )
    if len(labels) != count:
        raise VaelabError(f"{images_path}: {count} images but {path} has {len(labels)} labels")
    return labels


def read_idx_split(
    images_path: str | Path, labels_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file (N x H x W, uint8) and its labels file (N), checking they agree."""
    images = read_idx_images(images_path)
    return images, read_idx_labels(labels_path, images_path, len(images))


def load_idx_source(path: Path, test_path: Path | None, config: DataConfig) -> Dataset:
    """A Dataset from IDX files of any name: a folder of them (or torchvision's
    ``<root>/<Name>/raw/``), or an images file with its labels beside it.

    Images and labels are told apart by their headers (3 dimensions, 1), train and test by their
    names ('train'; 't10k' or 'test'); a file named like an EMNIST file ('emnist') holds its
    images transposed and is transposed back. Without test files, `config.test_split` of the
    training images is held out (seeded by `config.split_seed`). Labels are optional.
    """
    from vaelab.data.idx_files import load_idx_files  # it reads files with this module

    return load_idx_files(path, test_path, config)
