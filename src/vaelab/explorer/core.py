"""A run opened for exploring: its model, its test set's latent means on the 2-D plane, and the
images the page asks for (decoded points, prior samples) as PNG.

Images of any size are sent as they are shown: one channel as greyscale, three as RGB (see
`vaelab.viz.images.displayable`). Unlabelled test sets have no labels and no class names.

This is the part of the latent explorer that knows nothing of the web; `vaelab.explorer.app`
wraps it. Everything about the latent space comes from `vaelab.latent`, so the map has the
report's orientation and a seed gives the images `vaelab sample` and the report give.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.config import DataConfig
from vaelab.data import Dataset
from vaelab.latent import (
    LatentPlane,
    decode,
    label_names,
    latent_plane,
    posterior,
    prior_samples,
)
from vaelab.models import VAE
from vaelab.rundir import open_run
from vaelab.viz.images import displayable, png_bytes, to_uint8

MAX_POINTS = 10_000  # test points kept for the scatter


def png_data_url(pixels: np.ndarray) -> str:
    """An H x W (grey) or H x W x 3 (RGB) uint8 image as a `data:image/png;base64,...` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


@dataclass(frozen=True)
class Explorer:
    """A run's model and its test set's latent means, ready to answer the page."""

    run_name: str
    model: VAE
    image_shape: tuple[int, int]  # H, W
    class_names: tuple[str, ...]  # empty without labels
    source: str
    labels: np.ndarray | None  # N class indices, None for unlabelled data
    latents: np.ndarray  # N x latent_dim
    view: LatentPlane
    channels: int = 1

    @property
    def latent_dim(self) -> int:
        """Dimensions of the latent space."""
        return self.latents.shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape, (C, H, W)."""
        return (self.channels, *self.image_shape)

    @property
    def conditional(self) -> bool:
        """Whether the model decodes a code as a chosen class."""
        return self.model.config.conditional

    def decode_pixels(self, z: np.ndarray, label: int | None = None) -> np.ndarray:
        """uint8 images decoded from latent vectors (N x latent_dim): N x H x W for one channel,
        N x H x W x 3 for RGB; a conditional model decodes them as class `label` (default 0)."""
        label = (label or 0) if self.conditional else None
        images = decode(self.model, z, labels=label).float().cpu().numpy()
        return displayable(to_uint8(images), self.shape)

    def prior_samples(
        self, count: int, seed: int, label: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`count` codes z ~ p(z) from `seed` (those of `vaelab sample`) and their images."""
        z = prior_samples(self.model, count, seed).numpy()
        return z, self.decode_pixels(z, label)


def load_explorer(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    dataset: Dataset | None = None,
    data: DataConfig | None = None,
) -> Explorer:
    """Load a run, its test set (from where the run found it, `data_dir`, `data` or `dataset`)
    and the test set's latent means."""
    run = open_run(run_dir, dataset, data_dir, device="cpu", data=data)
    return explorer_of(run.model, run.dataset, run.name)


def explorer_of(model: VAE, test: Dataset, name: str) -> Explorer:
    """The explorer of `model` over the test images of `test` (at most MAX_POINTS, evenly
    spaced), under the name `name`."""
    keep = evenly_spaced(len(test.test_images), MAX_POINTS)
    labels = None if test.test_labels is None else test.test_labels[keep].numpy().astype(np.int64)
    given = labels if model.config.conditional else None
    latents = posterior(model, test.test_images[keep], labels=given)[0].double().numpy()
    return Explorer(
        run_name=name,
        model=model,
        image_shape=test.image_shape,
        class_names=label_names(labels, test.class_names),
        source=test.source,
        labels=labels,
        latents=latents,
        view=latent_plane(latents),
        channels=test.channels,
    )


def evenly_spaced(total: int, most: int) -> torch.Tensor:
    """Indices of at most `most` of `total` items, evenly spaced, first and last included."""
    if total <= most:
        return torch.arange(total)
    return torch.linspace(0, total - 1, most).round().long()
