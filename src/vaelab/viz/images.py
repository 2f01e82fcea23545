"""Images as files: grids of tiles, 8-bit PNG (through Pillow), and the samples `vaelab sample`
writes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from vaelab._extras import require_extra
from vaelab._io import atomic_write_bytes
from vaelab.errors import VaelabError

SAMPLE_SUFFIXES = (".png", ".npy")


def tile(
    images: np.ndarray, cols: int | None = None, pad: int = 1, fill: float = np.nan
) -> np.ndarray:
    """Images (N x H x W) as one grid of `cols` per row (default ceil(sqrt(N))).

    Tiles are `pad` pixels apart; the gaps and any empty cells of the last row hold `fill`.
    """
    count, height, width = images.shape
    cols = cols or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cells = np.full((rows * cols, height + pad, width + pad), fill, dtype=np.float32)
    cells[:count, :height, :width] = images
    blocks = cells.reshape(rows, cols, height + pad, width + pad).transpose(0, 2, 1, 3)
    grid = blocks.reshape(rows * (height + pad), cols * (width + pad))
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] as 8-bit values 0-255, rounded to the nearest."""
    return np.rint(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of an H x W uint8 array (floats in [0, 1] are converted first)."""
    require_extra("plots", "PIL")
    from PIL import Image

    if pixels.dtype != np.uint8:
        pixels = to_uint8(pixels)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples(images: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write images (n x H x W in [0, 1]) as a .npy array (float32) or a PNG grid, atomically.

    The PNG shows one pixel per pixel with 1-pixel white lines between the images.
    """
    path = Path(path)
    if path.suffix.lower() not in SAMPLE_SUFFIXES:
        raise VaelabError(f"{path}: the output must end in .png or .npy")
    if path.exists() and not overwrite:
        raise VaelabError(
            f"{path}: already exists; pass overwrite=True to replace it", parameters=("overwrite",)
        )
    if not path.parent.is_dir():
        raise VaelabError(f"{path.parent}: folder not found")
    images = np.asarray(images, dtype=np.float32)
    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, images, allow_pickle=False)
        payload = buffer.getvalue()
    else:
        payload = png_bytes(tile(images, fill=1.0))
    atomic_write_bytes(path, payload)
    return path
