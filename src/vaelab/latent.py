"""A trained model's latent space, one implementation for every caller: batched posterior means,
decoding, prior samples, the 2-D plane in which the figures and the explorer draw it, and the
lattices and image pairs the manifold and interpolation figures decode, and the names of the
classes they are coloured by.

The report, `vaelab sample` and the explorer all come through here, so the same seed gives the
same images everywhere and the latent map has the same orientation in the report and the explorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vaelab._bounds import require_whole
from vaelab.config import check_seed
from vaelab.data.dataset import as_unit_images
from vaelab.data.images import Images
from vaelab.decoding import require_decoding_memory
from vaelab.errors import VaelabError
from vaelab.models import VAE, evaluating

BATCH = 2000  # images or codes per forward pass
MAX_SAMPLES = 100_000


def as_model_input(values: torch.Tensor | np.ndarray, model: VAE) -> torch.Tensor:
    """`values` as a tensor on the model's device and in its dtype (rows flattened for images)."""
    parameter = next(model.parameters())
    return torch.as_tensor(values).to(device=parameter.device, dtype=parameter.dtype)


def class_labels(
    model: VAE, labels: torch.Tensor | np.ndarray | int | None, count: int
) -> torch.Tensor | None:
    """The class of each of `count` images or codes for a conditional model (one class given as
    an int applies to all); None for an unconditional model, which takes no labels."""
    if not model.config.conditional:
        return None
    if labels is None:
        raise VaelabError(
            "this model is conditional: give the class of each image or code (labels)",
            parameters=("labels",),
        )
    device = next(model.parameters()).device
    if isinstance(labels, (int, np.integer)):
        return torch.full((count,), int(labels), dtype=torch.long, device=device)
    values = torch.as_tensor(labels)
    if values.shape != (count,):
        raise VaelabError(
            f"labels must be one class per row ({count}), got shape {tuple(values.shape)}",
            parameters=("labels",),
        )
    return values.to(device)


@torch.no_grad()
def posterior(
    model: VAE,
    images: Images | torch.Tensor | np.ndarray,
    batch_size: int = BATCH,
    labels: torch.Tensor | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of q(z|x) for images (N x D, or N x H x W), on the model's device.

    Images are floats in [0, 1] or uint8 0-255 (scaled by 1/255); anything else is refused.
    A conditional model needs each image's class, `labels`.
    """
    require_whole("batch_size", batch_size, 1)
    means, logvars = [], []
    classes = class_labels(model, labels, len(images))
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            pixels = as_unit_images(images[start : start + batch_size])
            batch = as_model_input(pixels, model)
            rows = None if classes is None else classes[start : start + batch_size]
            mu, logvar = model.encode(batch.reshape(len(batch), -1), rows)
            means.append(mu)
            logvars.append(logvar)
    if not means:
        raise VaelabError("there are no images to encode")
    return torch.cat(means), torch.cat(logvars)


def encode(
    model: VAE,
    images: Images | torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Posterior means (N x latent_dim) of images (N x D or N x H x W, [0, 1] floats or uint8);
    `labels` are the images' classes for a conditional model."""
    return posterior(model, images, labels=labels)[0]


@torch.no_grad()
def decode(
    model: VAE,
    z: torch.Tensor | np.ndarray,
    batch_size: int = BATCH,
    labels: torch.Tensor | np.ndarray | int | None = None,
) -> torch.Tensor:
    """The decoder's expected images (N x D, intensities in [0, 1]) for latent codes z; a
    conditional model decodes each code as the class `labels` gives (one int for all). Codes
    whose images would not fit in the free memory are refused before any is decoded."""
    return _decode(model, z, batch_size, labels, ("z",))


@torch.no_grad()
def _decode(
    model: VAE,
    z: torch.Tensor | np.ndarray,
    batch_size: int,
    labels: torch.Tensor | np.ndarray | int | None,
    count_names: Sequence[str],
) -> torch.Tensor:
    """`decode`, its memory refusal naming `count_names`: what sets the number of codes."""
    require_decoding_memory(model, len(z), batch_size, count_names)
    codes = as_model_input(z, model)
    classes = class_labels(model, labels, len(codes))
    with evaluating(model):
        parts = [
            model.decode(
                codes[i : i + batch_size], None if classes is None else classes[i : i + batch_size]
            )
            for i in range(0, len(codes), batch_size)
        ]
    return torch.cat(parts) if parts else codes.new_zeros(0, model.config.input_dim)


def _check_sample_request(n: int, seed: int) -> None:
    if isinstance(n, bool) or not (isinstance(n, int) and 1 <= n <= MAX_SAMPLES):
        raise VaelabError(
            f"n (samples) must be between 1 and {MAX_SAMPLES}, got {str(n)[:40]}", parameters=("n",)
        )
    check_seed(seed)


def prior_codes(n: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """`n` codes z ~ N(0, I), float32 on the CPU, the same for a seed on every machine."""
    _check_sample_request(n, seed)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=generator)


@torch.no_grad()
def prior_samples(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """`n` codes z ~ p(z) of the model's prior, float32 on the CPU, the same for a seed on every
    machine: `prior_codes` for N(0, I), else drawn from the VampPrior or the mixture."""
    if model.config.prior == "gaussian":
        return prior_codes(n, model.config.latent_dim, seed)
    _check_sample_request(n, seed)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with evaluating(model):
        return model.sample_prior(n, generator).float().cpu()


def sample(model: VAE, n: int, seed: int = 0, label: int | None = None) -> torch.Tensor:
    """`n` new images (n x D in [0, 1], on the CPU): the decoder's mean for z ~ p(z). A
    conditional model draws them all of class `label`, or without it the classes in turn. `n`
    images that would not fit in the free memory are refused before any is drawn."""
    _check_sample_request(n, seed)
    codes = prior_samples(model, n, seed)
    labels: torch.Tensor | int | None = label
    if model.config.conditional and label is None:
        labels = torch.arange(n) % model.config.classes
    return _decode(model, codes, BATCH, labels, ("n",)).float().cpu()


def class_index(model: VAE, class_names: Sequence[str], name: str | int | None) -> int | None:
    """The class index a conditional model is asked for: `name` is one of `class_names` (any
    case) or an index; None stays None. An unconditional model takes no class."""
    if name is None:
        return None
    if not model.config.conditional:
        raise VaelabError(
            "a class can be chosen only for a conditional model (one trained with "
            "conditional=True)",
            parameters=("class",),
        )
    names = [str(n).lower() for n in class_names]
    text = str(name).strip()
    if text.lower() in names:
        return names.index(text.lower())
    if text.isdigit() and int(text) < model.config.classes:
        return int(text)
    known = ", ".join(class_names) if class_names else f"0 to {model.config.classes - 1}"
    raise VaelabError(
        f"class {text!r} is not one of the model's classes ({known})", parameters=("class",)
    )


def most_active_dims(means: np.ndarray) -> tuple[int, int]:
    """The two latent dimensions whose posterior means vary most across the images.

    Dimensions the model does not use keep q(z|x) near the prior: their means stay near 0 for
    every image, so the spread of the means (not the posterior variance itself) picks the used ones.
    """
    order = np.argsort(-means.var(axis=0), kind="stable")
    return int(order[0]), int(order[1])


@dataclass(frozen=True)
class LatentPlane:
    """How a latent space is drawn in 2-D: `xy = (z - mean) @ components.T`.

    `z = mean + xy @ components` maps a point of the plane back into the latent space. For
    latent_dim 2 this is the identity (for 1 the second axis is 0); for more dimensions it is the
    plane of the first two principal components of the means it was fitted to, each axis's sign
    fixed so that the first latent dimension has a non-negative weight.
    """

    kind: str  # "latent" (the axes are z's own) or "pca"
    mean: np.ndarray  # latent_dim
    components: np.ndarray  # 2 x latent_dim, orthonormal rows
    explained_variance: tuple[float, float] | None  # fractions of the variance, for "pca"

    def project(self, z: np.ndarray) -> np.ndarray:
        """Plane coordinates (N x 2) of latent codes (N x latent_dim)."""
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.components.T


def latent_plane(means: np.ndarray) -> LatentPlane:
    """The plane to draw posterior means (N x latent_dim) in: identity up to 2-D, else 2-D PCA."""
    means = np.asarray(means, dtype=np.float64)
    dim = means.shape[1]
    if dim <= 2:
        return LatentPlane("latent", np.zeros(dim), np.eye(2, dim), None)
    mean = means.mean(axis=0)
    _, singular, vh = np.linalg.svd(means - mean, full_matrices=False)
    components = vh[:2] * np.sign(vh[:2, [0]] + (vh[:2, [0]] == 0))
    variance = singular**2
    explained = variance[:2] / max(float(variance.sum()), 1e-30)
    return LatentPlane("pca", mean, components, (float(explained[0]), float(explained[1])))


def latent_grid(grid: int, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (x, y) coordinates of a grid x grid lattice over [-span, span]^2.

    As in the tutorial, the top row is at y = +span and the left column at x = -span.
    """
    values = np.linspace(-span, span, grid)
    return np.tile(values, grid), np.repeat(values[::-1], grid)


def interpolation_pairs(
    labels: np.ndarray | None, pairs: int, count: int | None = None
) -> list[tuple[int, int]]:
    """Indices of `pairs` image pairs of different classes: classes 0-1, 2-3, ... in order.

    Without labels (`labels` None, `count` images) or with a test set of one class, the pairs
    are consecutive images instead: (0, 1), (2, 3), ...
    """
    if labels is None:
        if count is None:
            raise VaelabError("interpolation pairs without labels need the number of images")
        return _consecutive_pairs(count, pairs)
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        return _consecutive_pairs(len(labels), pairs)
    unused = {int(c): list(np.flatnonzero(labels == c)) for c in present}
    chosen = []
    for k in range(pairs):
        ends = []
        for c in (present[(2 * k) % len(present)], present[(2 * k + 1) % len(present)]):
            candidates = unused[int(c)]
            ends.append(int(candidates.pop(0) if len(candidates) > 1 else candidates[0]))
        chosen.append((ends[0], ends[1]))
    return chosen


def _consecutive_pairs(count: int, pairs: int) -> list[tuple[int, int]]:
    if count < 2:
        raise VaelabError("interpolation needs at least two test images")
    return [((2 * k) % count, (2 * k + 1) % count) for k in range(pairs)]


def label_names(labels: np.ndarray | None, class_names: Sequence[str]) -> tuple[str, ...]:
    """A name for every class index in `labels`: `class_names`, then the indices past them as
    text; none without labels."""
    if labels is None:
        return ()
    highest = int(np.max(labels, initial=-1))
    extra = (str(index) for index in range(len(class_names), highest + 1))
    return (*(str(name) for name in class_names), *extra)
