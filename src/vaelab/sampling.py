"""New images from a trained model: z ~ N(0, I) through the decoder, saved as PNG or .npy."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from vaelab.checkpoints import atomic_write_bytes, load_run_info
from vaelab.errors import VaelabError
from vaelab.models import VAE

SAMPLE_SUFFIXES = (".png", ".npy")
MAX_SAMPLES = 100_000


@torch.no_grad()
def sample(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """`n` images (n x D, intensities in [0, 1]): the decoder's mean for z ~ N(0, I) from `seed`."""
    if not 1 <= n <= MAX_SAMPLES:
        raise VaelabError(f"the number of samples must be between 1 and {MAX_SAMPLES}, got {n}")
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.config.latent_dim, generator=generator, dtype=torch.float64)
    was_training = model.training
    model.eval()
    images = model.decode(z.to(parameter.device, parameter.dtype))
    model.train(was_training)
    return images.float().cpu()


def run_image_shape(run_dir: str | Path, input_dim: int) -> tuple[int, int]:
    """(height, width) of the run's images, as config.json recorded them, else square."""
    try:
        shape = tuple(load_run_info(run_dir)["dataset"]["image_shape"])
    except (KeyError, TypeError, OSError, ValueError):
        shape = ()
    if len(shape) == 2 and shape[0] * shape[1] == input_dim:
        return int(shape[0]), int(shape[1])
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise VaelabError(f"{run_dir}: config.json does not say the shape of its images")
    return side, side


def tile(images: np.ndarray, gap: float = 1.0) -> np.ndarray:
    """Images (n x H x W) as one grid, ceil(sqrt(n)) per row, with 1-pixel lines of `gap`."""
    count, height, width = images.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cells = np.full((rows * cols, height + 1, width + 1), gap, dtype=np.float32)
    cells[:count, :height, :width] = images
    grid = cells.reshape(rows, cols, height + 1, width + 1).transpose(0, 2, 1, 3)
    return grid.reshape(rows * (height + 1), cols * (width + 1))[:-1, :-1]


def png_bytes(grid: np.ndarray) -> bytes:
    """A grey PNG of a [0, 1] array, one pixel per value."""
    from matplotlib.image import imsave  # matplotlib loads only when a PNG is written

    buffer = io.BytesIO()
    imsave(buffer, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    return buffer.getvalue()


def write_samples(images: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write images (n x H x W in [0, 1]) as a .npy array (float32) or a PNG grid, atomically."""
    path = Path(path)
    if path.suffix.lower() not in SAMPLE_SUFFIXES:
        raise VaelabError(f"{path}: the output must end in .png or .npy")
    if path.exists() and not overwrite:
        raise VaelabError(f"{path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise VaelabError(f"{path.parent}: folder not found")
    images = np.asarray(images, dtype=np.float32)
    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, images, allow_pickle=False)
        payload = buffer.getvalue()
    else:
        payload = png_bytes(tile(images))
    try:
        atomic_write_bytes(path, payload)
    except OSError as exc:
        raise VaelabError(f"{path}: cannot write ({exc.strerror})") from None
    return path
