"""The latent-space scatter: where the encoder puts the test images, coloured by class when they
have classes.

Up to MAX_LEGEND_CLASSES classes each get a colour and marker of their own and a legend entry;
more classes share one continuous colour map by class index with a colour bar; unlabelled
images are one colour without a legend.
"""

# ruff: noqa: E402  (the extra is checked, in one line naming it, before matplotlib is imported)

from __future__ import annotations

from collections.abc import Sequence

from vaelab._extras import require_extra
from vaelab.data.images import Images

require_extra("plots", "matplotlib")

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab import latent
from vaelab.models import VAE
from vaelab.viz.curves import DPI

# The tutorial's markers; colours come from a qualitative colour map.
MARKERS = ("*", "s", "v", "^", "+", "o", "P", "D", "p", "d")
MAX_LEGEND_CLASSES = 20  # tab20's colours; past them a legend no longer tells classes apart
SCALE_CMAP = "turbo"  # for more classes: neighbouring indices get neighbouring colours
SIZE, ALPHA = 9, 0.55  # of each point


def posterior_means(
    model: VAE, images: Images | torch.Tensor, labels: torch.Tensor | np.ndarray | None = None
) -> np.ndarray:
    """Posterior means of `images` as a float NumPy array on the CPU (a conditional model's
    given each image's class, `labels`; other models ignore them)."""
    given = labels if model.config.conditional else None
    return latent.posterior(model, images, labels=given)[0].float().cpu().numpy()


def latent_scatter(
    model: VAE,
    images: Images | torch.Tensor,
    labels: torch.Tensor | np.ndarray | None,
    class_names: Sequence[str] = (),
) -> Figure:
    """Posterior means of `images`, one colour and marker per class (one colour without labels).

    With more than two latent dimensions, the first two principal components of the means.
    """
    means = posterior_means(model, images, labels)
    classes = None if labels is None else np.asarray(torch.as_tensor(labels).cpu())
    fig = Figure(figsize=(10, 8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    coords, xlabel, ylabel, note = _plane(means, classes)
    names = latent.label_names(classes, class_names)
    if classes is None:
        ax.scatter(
            coords[:, 0], coords[:, 1], s=SIZE, color="tab:blue", alpha=ALPHA, edgecolors="none"
        )
    elif len(names) <= MAX_LEGEND_CLASSES:
        _scatter_with_legend(ax, coords, classes, names)
    else:
        _scatter_on_a_scale(fig, ax, coords, classes, len(names))
    unlabelled = " (unlabelled)" if classes is None else ""
    ax.set_title(f"Posterior means of {len(means)} test images{unlabelled}{note}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.4)
    return fig


def _scatter_with_legend(
    ax: Axes, coords: np.ndarray, labels: np.ndarray, names: Sequence[str]
) -> None:
    colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    for index, name in enumerate(names):
        chosen = labels == index
        if not chosen.any():
            continue
        marker = MARKERS[index % len(MARKERS)]
        edges = {"linewidths": 0.8} if marker == "+" else {"edgecolors": "none"}
        ax.scatter(
            coords[chosen, 0], coords[chosen, 1], color=colours(index % colours.N),
            s=SIZE, marker=marker, alpha=ALPHA, label=name, **edges,
        )  # fmt: skip
    legend = ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=2.5)
    for handle in legend.legend_handles:
        if handle is not None:
            handle.set_alpha(1.0)


def _scatter_on_a_scale(
    fig: Figure, ax: Axes, coords: np.ndarray, labels: np.ndarray, classes: int
) -> None:
    points = ax.scatter(
        coords[:, 0], coords[:, 1], c=labels, cmap=SCALE_CMAP, vmin=0, vmax=classes - 1,
        s=SIZE, alpha=ALPHA, edgecolors="none",
    )  # fmt: skip
    bar = fig.colorbar(points, ax=ax, label=f"class index (of {classes} classes)")
    if bar.solids is not None:
        bar.solids.set_alpha(1.0)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()


def _plane(means: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, str, str, str]:
    """2-D coordinates to scatter (`latent_plane`'s, as in the explorer), axis labels, a note."""
    dims = means.shape[1]
    plane = latent.latent_plane(means)
    coords = plane.project(means)
    if dims == 1:
        jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(means))
        if labels is None:
            coords[:, 1] = jitter
            return (
                coords,
                "z1 (posterior mean)",
                "jitter (spreads the points)",
                " (1-D latent space)",
            )
        coords[:, 1] = labels + jitter
        return coords, "z1 (posterior mean)", "class index (jittered)", " (1-D latent space)"
    if plane.explained_variance is None:
        return coords, "z1 (posterior mean)", "z2 (posterior mean)", ""
    first, second = plane.explained_variance
    return (
        coords,
        f"principal component 1 of the posterior means ({first:.0%} of variance)",
        f"principal component 2 of the posterior means ({second:.0%} of variance)",
        f"\nfirst two principal components of the {dims}-dimensional latent space",
    )
