"""The tutorial's figures, and two more, drawn from a model and its data as matplotlib Figures.

Figures are built from `matplotlib.figure.Figure` directly, never through pyplot, so using them
leaves a notebook's backend alone; `write_figures` renders them with Agg into RUN/figures/.

Images of any size are drawn one pixel per data pixel: one channel dark on white, as the tutorial
draws them, three channels in their own colours (see `vaelab.viz.images.displayable`). An
`image_shape` is (H, W) for one channel or (C, H, W).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vaelab._extras import require_extra
from vaelab.data.images import Images

require_extra("plots", "matplotlib", "PIL")

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaelab import latent
from vaelab._io import atomic_write_bytes
from vaelab.data import Dataset
from vaelab.data.dataset import as_unit_images
from vaelab.decoding import require_decoding_memory
from vaelab.errors import VaelabError
from vaelab.latent import interpolation_pairs, label_names, latent_grid
from vaelab.models import VAE
from vaelab.models.priors import VampPrior
from vaelab.rundir import (
    FIGURES_DIR,
    Run,
    check_figure_paths,
    loaded_weights_sha256,
    open_run,
    record_figures,
    run_lock,
    weights_sha256,
)
from vaelab.viz.curves import DPI, learning_curves
from vaelab.viz.describe import selected_epoch
from vaelab.viz.images import displayable, tile
from vaelab.viz.latent_plots import latent_scatter
from vaelab.viz.latent_plots import posterior_means as _means

MAX_SPAN = 1000.0  # far outside any posterior; beyond it the decoder's layers can overflow
GAP = "#c9d3df"  # blue-grey between tiles and in empty cells
# Dark garments on white, as the tutorial draws them (it shows -x in grey).
IMAGE_CMAP = matplotlib.colormaps["gray_r"].with_extremes(bad=GAP)
GAP_RGB = np.asarray(matplotlib.colors.to_rgb(GAP), dtype=np.float32)
# ---------------------------------------------------------------- the model as arrays

ImageShape = tuple[int, ...]  # (H, W) for one channel, or (C, H, W)


def _decoded(
    model: VAE,
    z: np.ndarray | torch.Tensor,
    image_shape: ImageShape,
    labels: torch.Tensor | np.ndarray | int | None = None,
) -> np.ndarray:
    """Decoded images for display; `labels` are the classes a conditional model decodes as."""
    given = labels if model.config.conditional else None
    images = latent.decode(model, z, labels=given)
    return displayable(images.float().cpu().numpy(), image_shape)


# ---------------------------------------------------------------- drawing helpers


def _show(ax: Axes, mosaic: np.ndarray, **options: Any) -> None:
    """Tiles drawn one pixel per pixel: grey through IMAGE_CMAP, RGB as they are."""
    if mosaic.ndim == 2:
        ax.imshow(mosaic, cmap=IMAGE_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", **options)
        return
    coloured = np.where(np.isnan(mosaic), GAP_RGB, np.clip(mosaic, 0.0, 1.0))
    ax.imshow(coloured, interpolation="nearest", **options)


def _aspect(tiles: np.ndarray) -> float:
    """Height over width of one shown tile, bounded so that figures keep a sensible size."""
    height, width = tiles.shape[1:3]
    return min(max(height / width, 0.25), 2.0)


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _tile_centres(count: int, size: int, pad: int = 1) -> list[float]:
    return [i * (size + pad) + (size - 1) / 2 for i in range(count)]


def _as_images(images: torch.Tensor | np.ndarray, image_shape: ImageShape) -> np.ndarray:
    pixels = as_unit_images(torch.as_tensor(images).cpu())
    return displayable(pixels.numpy().astype(np.float32).reshape(len(pixels), -1), image_shape)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise VaelabError(
            f"{name} must be between {low} and {high}, got {value}", parameters=(name,)
        )


# ---------------------------------------------------------------- the six figures


def reconstructions(
    model: VAE,
    images: Images | torch.Tensor,
    image_shape: ImageShape,
    count: int = 40,
    cols: int = 10,
    labels: torch.Tensor | None = None,
) -> Figure:
    """The first `count` images in rows of `cols`, each above its reconstruction decode(mu(x))
    (a conditional model's given each image's class, `labels`)."""
    _check_int("count", count, 1, 1000)
    inputs = _as_images(images[:count], image_shape)
    given = None if labels is None else labels[:count]
    means = _means(model, images[:count], given)
    outputs = _decoded(model, means, image_shape, given)
    blocks = math.ceil(len(inputs) / cols)
    fig = Figure(figsize=(9, 1.9 * blocks * _aspect(inputs) + 0.8), dpi=DPI, layout="constrained")
    fig.suptitle(
        f"First {len(inputs)} test images (input rows) and their reconstructions\n"
        "decoded from the posterior mean, decode(\u03bc(x))"
    )
    for block, ax in enumerate(fig.subplots(blocks, 1, squeeze=False)[:, 0]):
        part = slice(block * cols, (block + 1) * cols)
        pair = np.concatenate([_pad_row(inputs[part], cols), _pad_row(outputs[part], cols)])
        _show(ax, tile(pair, cols))
        ax.set_xticks([])
        ax.set_yticks(_tile_centres(2, inputs.shape[1]), ["input", "reconstruction"])
        ax.tick_params(length=0)
    return fig


def _pad_row(tiles: np.ndarray, cols: int) -> np.ndarray:
    """A short last row filled with NaN tiles, so inputs and reconstructions stay aligned."""
    missing = cols - len(tiles)
    return np.concatenate([tiles, np.full((missing, *tiles.shape[1:]), np.nan, np.float32)])


def check_grid(grid: int, span: float) -> None:
    """Refuse a manifold grid that cannot be drawn, before any work is done."""
    _check_int("grid", grid, 2, 100)
    if not (math.isfinite(span) and 0 < span <= MAX_SPAN):
        raise VaelabError(
            f"span must be a number above 0 and at most {MAX_SPAN:g}, got {span}",
            parameters=("span",),
        )


def manifold(
    model: VAE,
    image_shape: ImageShape,
    grid: int = 20,
    span: float = 2.0,
    images: Images | torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    label: int = 0,
    class_name: str = "",
) -> Figure:
    """Images decoded over a grid x grid lattice of [-span, span]^2, top row y = +span.

    With more than two latent dimensions, the lattice spans the two dimensions whose posterior
    means (over `images`, required then, with their `labels` for a conditional model) vary
    most; the others are 0. A conditional model decodes the lattice as class `label`.
    """
    check_grid(grid, span)
    require_decoding_memory(model, grid * grid, latent.BATCH, ("grid",))
    latent_dim = model.config.latent_dim
    x, y = latent_grid(grid, span)
    z = np.zeros((grid * grid, latent_dim), dtype=np.float32)
    dims: list[int]
    if latent_dim == 1:
        z = x[:grid, None].astype(np.float32)
        dims, note = [0], ""
    elif latent_dim == 2:
        dims, note = [0, 1], ""
    else:
        if images is None:
            raise VaelabError(
                f"a manifold of a {latent_dim}-dimensional latent space needs images to choose "
                "the two dimensions to span"
            )
        dims = list(latent.most_active_dims(_means(model, images, labels)))
        note = (
            f"\nz{dims[0] + 1} and z{dims[1] + 1}: the two dimensions whose posterior means vary "
            "most over the test set; all others 0"
        )
    if latent_dim >= 2:
        z[:, dims[0]], z[:, dims[1]] = x, y
    tiles = _decoded(model, z, image_shape, label)
    if model.config.conditional:
        note += f"\ndecoded as class {class_name or label}"
    half = span / (grid - 1)  # half a cell, so each tile is centred on its coordinate
    rows = 1 if latent_dim == 1 else grid
    aspect = _aspect(tiles)
    fig = Figure(figsize=(9.5, (10 if rows > 1 else 2.2) * aspect), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    top = span + half if rows > 1 else half
    # Each tile covers 2 * half of the plane both ways; its pixels keep their own proportions.
    height, width = tiles.shape[1:3]
    extent = (-span - half, span + half, -top, top)
    _show(ax, tile(tiles, grid, pad=0), extent=extent, aspect=height / width)
    square = "\u00b2" if rows > 1 else ""
    ax.set_title(
        f"Decoder output over a {grid}\u00d7{rows} grid of [{-span:g}, {span:g}]{square}{note}"
    )
    ax.set_xlabel(f"z{dims[0] + 1}")
    if rows > 1:
        ax.set_ylabel(f"z{dims[1] + 1}")
    else:
        ax.set_yticks([])
    return fig


def samples(
    model: VAE,
    image_shape: ImageShape,
    count: int = 100,
    seed: int = 0,
    class_names: Sequence[str] = (),
) -> Figure:
    """`count` images decoded from z ~ p(z) drawn with `seed` (`vaelab.latent.sample`); for a
    conditional model, a row of `count` / classes samples per class."""
    _check_int("count", count, 1, 2500)
    if model.config.conditional:
        return _samples_per_class(model, image_shape, count, seed, class_names)
    tiles = displayable(latent.sample(model, count, seed).numpy(), image_shape)
    cols = math.ceil(math.sqrt(count))
    fig = Figure(figsize=(9, 9 * _aspect(tiles) + 0.4), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _show(ax, tile(tiles, cols))
    _no_ticks(ax)
    ax.set_title(f"{count} images decoded from {_prior_name(model)}, seed {seed}")
    return fig


PRIOR_NAMES = {"gaussian": "N(0, I)", "vamp": "the VampPrior", "mog": "the mixture prior"}


def _prior_name(model: VAE) -> str:
    if model.config.prior == "gaussian":
        return "z ~ N(0, I) (the prior)"
    return f"z ~ {PRIOR_NAMES[model.config.prior]}"


def _samples_per_class(
    model: VAE, image_shape: ImageShape, count: int, seed: int, class_names: Sequence[str]
) -> Figure:
    """One row per class: the same codes z ~ p(z) decoded as each class."""
    classes = model.config.classes
    cols = max(1, min(count // classes, 20))
    codes = latent.prior_samples(model, cols, seed)
    rows = [_decoded(model, codes, image_shape, c) for c in range(classes)]
    tiles = np.concatenate(rows)
    fig = Figure(
        figsize=(9, 9 * _aspect(tiles) * classes / cols + 0.6), dpi=DPI, layout="constrained"
    )
    ax = fig.add_subplot()
    _show(ax, tile(tiles, cols))
    names = latent.label_names(np.arange(classes), class_names)
    ax.set_yticks(_tile_centres(classes, tiles.shape[1]), names)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_title(
        f"{cols} codes z ~ {PRIOR_NAMES[model.config.prior]} (seed {seed}), each decoded as "
        "every class"
    )
    return fig


def pseudo_inputs(model: VAE, image_shape: ImageShape, count: int = 50) -> Figure:
    """The first `count` learned pseudo-inputs of a VampPrior model, u_k = sigmoid(w_k), as
    images: the mixture's components are the encoder's posteriors at these."""
    if not isinstance(model.prior, VampPrior):
        raise VaelabError(
            f"pseudo-inputs belong to the VampPrior; this model's prior is {model.config.prior}",
            parameters=("prior",),
        )
    _check_int("count", count, 1, model.config.components)
    with torch.no_grad():
        pixels = model.prior.pseudo_inputs()[:count].float().cpu().numpy()
    tiles = displayable(pixels, image_shape)
    cols = min(10, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(9, 0.9 * rows * _aspect(tiles) + 0.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _show(ax, tile(tiles, cols))
    _no_ticks(ax)
    ax.set_title(
        f"{count} of the VampPrior's {model.config.components} learned pseudo-inputs u = sigmoid(w)"
    )
    return fig


def interpolation(
    model: VAE,
    images: Images | torch.Tensor,
    labels: torch.Tensor | np.ndarray | None,
    class_names: Sequence[str],
    image_shape: ImageShape,
    pairs: int = 5,
    steps: int = 10,
) -> Figure:
    """Straight lines from mu(A) to mu(B) for pairs of images of different classes, decoded.

    Each row: input A, `steps` decoded points from t = 0 to t = 1, input B. Without labels
    (`labels` None) the pairs are consecutive test images, named by their index.
    """
    _check_int("pairs", pairs, 1, 50)
    _check_int("steps", steps, 2, 50)
    classes = None if labels is None else np.asarray(torch.as_tensor(labels).cpu())
    chosen = interpolation_pairs(classes, pairs, len(images))
    ends = [index for pair in chosen for index in pair]
    end_labels = None if classes is None else classes[ends]
    means = _means(model, images[ends], end_labels)
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    inputs = _as_images(images[ends], image_shape)
    rows = []
    for k in range(len(chosen)):
        start, end = means[2 * k], means[2 * k + 1]
        path_labels = None
        if end_labels is not None:  # a conditional model: A's class, then B's from t = 0.5
            path_labels = np.where(t[:, 0] < 0.5, end_labels[2 * k], end_labels[2 * k + 1])
        path = _decoded(model, (1 - t) * start + t * end, image_shape, path_labels)
        rows.extend([inputs[2 * k][None], path, inputs[2 * k + 1][None]])
    cols = steps + 2
    height = 0.75 * len(chosen) * _aspect(inputs) + 1.1
    fig = Figure(figsize=(10.5, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _show(ax, tile(np.concatenate(rows), cols))
    ax.set_yticks(
        _tile_centres(len(chosen), inputs.shape[1]), _pair_names(chosen, classes, class_names)
    )
    ticks = ["input A", *(f"{v:.2f}" for v in t[:, 0]), "input B"]
    ax.set_xticks(_tile_centres(cols, inputs.shape[2]), ticks, fontsize=8)
    ax.tick_params(length=0)
    as_classes = (
        ", decoded as A's class up to t = 0.5, then as B's" if model.config.conditional else ""
    )
    ax.set_xlabel(f"t along the straight line z = (1 - t) \u03bc(A) + t \u03bc(B){as_classes}")
    different = classes is not None and len(np.unique(classes)) > 1
    ax.set_title(
        f"Latent interpolation between {len(chosen)} pairs of test images"
        f"{' of different classes' if different else ''}, {steps} steps"
    )
    return fig


def _pair_names(
    chosen: Sequence[tuple[int, int]], labels: np.ndarray | None, class_names: Sequence[str]
) -> list[str]:
    """Each pair's row label: its classes, or its images' indices without labels."""
    if labels is None:
        return [f"image {a} \u2192 image {b}" for a, b in chosen]
    names = label_names(labels, class_names)
    return [f"{names[labels[a]]} \u2192 {names[labels[b]]}" for a, b in chosen]


# ---------------------------------------------------------------- a run directory


def draw_figures(run: Run, grid: int = 20, span: float = 2.0) -> dict[str, Figure]:
    """All six figures of a run (see `vaelab.rundir.open_run`), keyed by their file names."""
    data = run.dataset
    images, labels, shape = data.test_images, data.test_labels, data.shape
    first_name = data.class_names[0] if data.class_names else ""
    return {
        "learning_curves.png": learning_curves(
            run.history, run.config.model.likelihood, selected_epoch(run.info)
        ),
        "reconstructions.png": reconstructions(run.model, images, shape, labels=labels),
        "latent.png": latent_scatter(run.model, images, labels, data.class_names),
        "manifold.png": manifold(
            run.model,
            shape,
            grid,
            span,
            images=images,
            labels=labels,
            class_name=first_name,
        ),
        "samples.png": samples(run.model, shape, class_names=data.class_names),
        "interpolation.png": interpolation(run.model, images, labels, data.class_names, shape),
    }


def figure_png(fig: Figure) -> bytes:
    """The figure rendered to PNG bytes by Agg, whatever backend is active."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def write_figures(
    run_dir: str | Path,
    grid: int = 20,
    span: float = 2.0,
    dataset: Dataset | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw the six figures of a run into RUN/figures/, each PNG written atomically.

    Figures are derived from the run, so drawing them again replaces the previous ones; the run's
    lock is held meanwhile, and RUN/figures.json records which weights they show.
    """
    check_grid(grid, span)
    check_figure_paths(run_dir)  # before the run is opened and its data read
    with run_lock(run_dir):
        run = open_run(run_dir, dataset, device=device)
        written = save_figures(run, grid, span, log)
        weights = loaded_weights_sha256(run.run_dir) or weights_sha256(run.run_dir)
        record_figures(run.run_dir, weights)
    return written


def save_figures(
    run: Run, grid: int = 20, span: float = 2.0, log: Callable[[str], None] | None = None
) -> list[Path]:
    """`write_figures` for a run already opened with `vaelab.rundir.open_run`."""
    out_dir = run.run_dir / FIGURES_DIR
    check_figure_paths(run.run_dir)
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{out_dir}: cannot create the figures folder ({exc.strerror})") from None
    written = []
    for name, fig in draw_figures(run, grid, span).items():
        atomic_write_bytes(out_dir / name, figure_png(fig))
        written.append(out_dir / name)
        if log:
            log(f"wrote {out_dir / name}")
    return written
