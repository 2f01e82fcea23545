"""A run opened for exploring: its model, its test set's latent means seen in 2-D, PNG decoding.

This is the part of the latent explorer that knows nothing of the web; `vaelab.serve` wraps it.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab import checkpoints
from vaelab.config import DataConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.models import VAE

MAX_POINTS = 10_000  # test points kept for the scatter
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the latent space in 2-D


@dataclass(frozen=True)
class LatentView:
    """How the page draws a latent space in 2-D: `xy = (z - mean) @ components.T`.

    `z = mean + xy @ components` maps a point of the page back into the latent space; for
    latent_dim 2 this is the identity, for more dimensions the plane of the first two principal
    components of the test set's latent means.
    """

    kind: str  # "latent" (the axes are z's own) or "pca"
    mean: np.ndarray  # latent_dim
    components: np.ndarray  # 2 x latent_dim, orthonormal rows
    explained_variance: tuple[float, float] | None  # fractions, for "pca"

    def project(self, z: np.ndarray) -> np.ndarray:
        return (z - self.mean) @ self.components.T


def latent_view(latents: np.ndarray) -> LatentView:
    """The identity view for latent_dim <= 2 (the second axis is 0 for 1-D), else 2-D PCA."""
    dim = latents.shape[1]
    if dim <= 2:
        return LatentView("latent", np.zeros(dim), np.eye(2, dim), None)
    mean = latents.mean(axis=0)
    _, singular, vh = np.linalg.svd(latents - mean, full_matrices=False)
    components = vh[:2] * np.sign(vh[:2, [0]] + (vh[:2, [0]] == 0))  # a fixed sign per axis
    variance = singular**2
    explained = variance[:2] / max(float(variance.sum()), 1e-30)
    return LatentView("pca", mean, components, (float(explained[0]), float(explained[1])))


@torch.inference_mode()
def latent_means(model: VAE, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Posterior means of `images` (N x D) as float64, encoded in batches."""
    parameter = next(model.parameters())
    batches = [
        model.encode(images[start : start + batch_size].to(parameter.device, parameter.dtype))[0]
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(batches).cpu().double().numpy()


# ---------------------------------------------------------------- images


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of an H x W uint8 array (filter 0 on every row)."""
    height, width = pixels.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)
    rows[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        [
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(pixels)).decode("ascii")


# ---------------------------------------------------------------- the loaded run


@dataclass(frozen=True)
class Explorer:
    """A run's model and its test set's latent means, ready to answer the page."""

    run_name: str
    model: VAE
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    source: str
    labels: np.ndarray  # N
    latents: np.ndarray  # N x latent_dim
    view: LatentView

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[1]

    def decode_pixels(self, z: np.ndarray) -> np.ndarray:
        return decode_pixels(self.model, z, self.image_shape)


@torch.inference_mode()
def decode_pixels(model: VAE, z: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """uint8 images (N x H x W) decoded from latent vectors (N x latent_dim)."""
    parameter = next(model.parameters())
    x = model.decode(torch.as_tensor(z, dtype=parameter.dtype, device=parameter.device))
    pixels = x.mul(255).round_().to(torch.uint8).cpu().numpy()
    return pixels.reshape(len(z), *image_shape)


def load_explorer(
    run_dir: str | Path, data_dir: str | Path | None = None, dataset: Dataset | None = None
) -> Explorer:
    """Load a run, its test set (from where the run found it, `data_dir`, or `dataset`) and the
    test set's latent means."""
    run_dir = Path(run_dir)
    model = checkpoints.load(run_dir, device="cpu")
    if dataset is None:
        data_config = checkpoints.load_config(run_dir).data
        if data_dir is not None:
            data_config = DataConfig(data_dir=str(data_dir))
        dataset = load_dataset(data_config)
    if dataset.input_dim != model.config.input_dim:
        raise VaelabError(
            f"{run_dir}: the model expects {model.config.input_dim} pixels per image but the "
            f"data ({dataset.source}) has {dataset.input_dim}"
        )
    keep = _evenly_spaced(len(dataset.test_images), MAX_POINTS)
    latents = latent_means(model, dataset.test_images[keep])
    labels = dataset.test_labels[keep].numpy().astype(np.int64)
    names = tuple(dataset.class_names) + tuple(
        str(label) for label in range(len(dataset.class_names), int(labels.max(initial=-1)) + 1)
    )
    return Explorer(
        run_name=run_dir.resolve().name,
        model=model,
        image_shape=dataset.image_shape,
        class_names=names,
        source=dataset.source,
        labels=labels,
        latents=latents,
        view=latent_view(latents),
    )


def _evenly_spaced(total: int, most: int) -> torch.Tensor:
    if total <= most:
        return torch.arange(total)
    return torch.linspace(0, total - 1, most).round().long()
