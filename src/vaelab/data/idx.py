"""IDX files (the MNIST family's format): raw or gzip-compressed, every header field checked."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vaelab._io import read_error
from vaelab.errors import VaelabError

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed), checking its magic number, dtype and size."""
    path = Path(path)
    raw = _read_maybe_gzipped(path)
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


def _read_maybe_gzipped(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            if head != b"\x1f\x8b":
                return handle.read()
            try:
                with gzip.GzipFile(fileobj=handle) as unzipped:
                    return unzipped.read()
            except (EOFError, OSError, zlib.error) as exc:
                raise VaelabError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    except OSError as exc:
        raise read_error(path, exc) from None


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
