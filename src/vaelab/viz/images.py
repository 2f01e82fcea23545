"""Images as files: grids of tiles, 8-bit PNG (through Pillow), and the samples `vaelab sample`
writes.

vaelab stores an image flat, C*H*W values in channel-major order (C x H x W). To be shown it
becomes an array for matplotlib and Pillow: H x W for one channel (grey), H x W x 3 for three
(RGB), and for any other number of channels the channels side by side in grey, H x C*W.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaelab._extras import require_extra
from vaelab._outputs import SAMPLES, check_output, write_output
from vaelab.errors import VaelabError


def full_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of an image from (H, W) (one channel) or (C, H, W)."""
    sides = tuple(int(n) for n in shape)
    if len(sides) == 2:
        return (1, *sides)
    if len(sides) == 3:
        return sides[0], sides[1], sides[2]
    raise VaelabError(
        f"an image shape is (height, width) or (channels, height, width), got {list(sides)}",
        parameters=("image_shape",),
    )


def displayable(images: np.ndarray, shape: Sequence[int] | None = None) -> np.ndarray:
    """Images as arrays to show: N x H x W (grey), N x H x W x 3 (RGB), else N x H x C*W.

    `images` are N x H x W (grey), N x C x H x W, or flat (N x C*H*W, with `shape` (C, H, W) or
    (H, W)); they keep their dtype.
    """
    images = np.asarray(images)
    if shape is not None:
        images = images.reshape(len(images), *full_shape(shape))
    if images.ndim == 3:
        return images
    if images.ndim != 4:
        raise VaelabError(f"images must be N x H x W or N x C x H x W, got {images.shape}")
    count, channels, height, width = images.shape
    if channels == 1:
        return images[:, 0]
    if channels == 3:
        return np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    return np.ascontiguousarray(images.transpose(0, 2, 1, 3).reshape(count, height, -1))


def tile(
    images: np.ndarray, cols: int | None = None, pad: int = 1, fill: float = np.nan
) -> np.ndarray:
    """Images (N x H x W, or N x H x W x 3 for RGB) as one grid of `cols` per row.

    `cols` defaults to ceil(sqrt(N)). Tiles are `pad` pixels apart; the gaps and any empty cells
    of the last row hold `fill`.
    """
    count, height, width = images.shape[:3]
    colour = images.shape[3:]
    cols = cols or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cells = np.full((rows * cols, height + pad, width + pad, *colour), fill, dtype=np.float32)
    cells[:count, :height, :width] = images
    blocks = cells.reshape(rows, cols, height + pad, width + pad, *colour).swapaxes(1, 2)
    grid = blocks.reshape(rows * (height + pad), cols * (width + pad), *colour)
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] as 8-bit values 0-255, rounded to the nearest."""
    return np.rint(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of an image: H x W greyscale ('L') or H x W x 3 colour ('RGB').

    uint8 values are written as they are; floats in [0, 1] are converted first.
    """
    require_extra("plots", "PIL")
    from PIL import Image

    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise VaelabError(f"a PNG image is H x W or H x W x 3, got {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = to_uint8(pixels)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples(images: np.ndarray, out: str | Path, overwrite: bool = False) -> Path:
    """Write images in [0, 1] as a .npy array (float32) or a PNG grid, atomically.

    `images` are n x H x W (grey) or n x C x H x W (channel-major, as vaelab stores them); the
    .npy keeps that shape. The PNG shows one pixel per pixel, RGB for three channels, with
    1-pixel white lines between the images. An existing `out` is replaced only with `overwrite`,
    and only when it is a samples file vaelab wrote (`vaelab._outputs`).
    """
    out = Path(out)
    check_output(out, SAMPLES, overwrite)
    if not out.parent.is_dir():
        raise VaelabError(f"{out.parent}: folder not found")
    images = np.asarray(images, dtype=np.float32)
    if out.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, images, allow_pickle=False)
        payload = buffer.getvalue()
    else:
        payload = png_bytes(tile(displayable(images), fill=1.0))
    return write_output(out, SAMPLES, payload, overwrite)
