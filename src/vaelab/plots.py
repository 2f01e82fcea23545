"""The tutorial's figures, and two more, drawn from a model and its data as matplotlib Figures.

Figures are built from `matplotlib.figure.Figure` directly, never through pyplot, so using them
leaves a notebook's backend alone; `write_figures` renders them with Agg into RUN/figures/.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab import checkpoints
from vaelab.config import RunConfig
from vaelab.data import Dataset, load_dataset
from vaelab.errors import VaelabError
from vaelab.models import VAE

FIGURES_DIR = "figures"
FIGURE_FILES = (
    "learning_curves.png",
    "reconstructions.png",
    "latent.png",
    "manifold.png",
    "samples.png",
    "interpolation.png",
)
DPI = 100
# The tutorial's markers; colours come from a qualitative colour map.
MARKERS = ("*", "s", "v", "^", "+", "o", "P", "D", "p", "d")
# Dark garments on white, as the tutorial draws them (it shows -x in grey); gaps are blue-grey.
IMAGE_CMAP = matplotlib.colormaps["gray_r"].with_extremes(bad="#c9d3df")
CURVES = (("loss", "-"), ("mse", ":"), ("kld", "--"))
ENCODE_BATCH = 2000


# ---------------------------------------------------------------- the model as arrays


@torch.no_grad()
def posterior(model: VAE, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of flattened `images` (N x D), encoded in batches."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    means, logvars = [], []
    for start in range(0, len(images), ENCODE_BATCH):
        batch = torch.as_tensor(images[start : start + ENCODE_BATCH]).to(device, torch.float32)
        mu, logvar = model.encode(batch.reshape(len(batch), -1))
        means.append(mu.cpu())
        logvars.append(logvar.cpu())
    model.train(was_training)
    return torch.cat(means).numpy(), torch.cat(logvars).numpy()


@torch.no_grad()
def _decode(model: VAE, z: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    parameter = next(model.parameters())
    codes = torch.as_tensor(z, dtype=parameter.dtype, device=parameter.device)
    return model.decode(codes).cpu().numpy().reshape(len(z), *image_shape)


def most_active_dims(means: np.ndarray) -> tuple[int, int]:
    """The two latent dimensions whose posterior means vary most across the images.

    Dimensions the model does not use keep q(z|x) near the prior: their means stay near 0 for
    every image, so the spread of the means (not the posterior variance itself) picks the used ones.
    """
    order = np.argsort(-means.var(axis=0), kind="stable")
    return int(order[0]), int(order[1])


def latent_grid(grid: int, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (x, y) coordinates of a grid x grid lattice over [-span, span]^2.

    As in the tutorial, the top row is at y = +span and the left column at x = -span.
    """
    values = np.linspace(-span, span, grid)
    return np.tile(values, grid), np.repeat(values[::-1], grid)


def interpolation_pairs(labels: np.ndarray, pairs: int) -> list[tuple[int, int]]:
    """Indices of `pairs` image pairs of different classes: classes 0-1, 2-3, ... in order.

    A test set of one class gives pairs of consecutive images instead.
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(labels) < 2:
        raise VaelabError("interpolation needs at least two test images")
    if len(present) < 2:
        return [((2 * k) % len(labels), (2 * k + 1) % len(labels)) for k in range(pairs)]
    unused = {int(c): list(np.flatnonzero(labels == c)) for c in present}
    chosen = []
    for k in range(pairs):
        ends = []
        for c in (present[(2 * k) % len(present)], present[(2 * k + 1) % len(present)]):
            candidates = unused[int(c)]
            ends.append(int(candidates.pop(0) if len(candidates) > 1 else candidates[0]))
        chosen.append((ends[0], ends[1]))
    return chosen


# ---------------------------------------------------------------- drawing helpers


def _mosaic(tiles: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Tile N images (N x H x W) into rows of `cols`; gaps and empty cells are NaN."""
    count, height, width = tiles.shape
    rows = math.ceil(count / cols)
    out = np.full(
        (rows * (height + pad) - pad, cols * (width + pad) - pad), np.nan, dtype=np.float32
    )
    for index, tile in enumerate(tiles):
        top, left = (index // cols) * (height + pad), (index % cols) * (width + pad)
        out[top : top + height, left : left + width] = tile
    return out


def _show(ax: Axes, mosaic: np.ndarray, **options: Any) -> None:
    ax.imshow(mosaic, cmap=IMAGE_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", **options)


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _tile_centres(count: int, size: int, pad: int = 1) -> list[float]:
    return [i * (size + pad) + (size - 1) / 2 for i in range(count)]


def _as_images(images: torch.Tensor | np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(torch.as_tensor(images).cpu(), dtype=np.float32).reshape(-1, *image_shape)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise VaelabError(f"{name} must be between {low} and {high}, got {value}")


# ---------------------------------------------------------------- the six figures


def learning_curves(history: Sequence[Mapping[str, float] | Any]) -> Figure:
    """Train (blue) and test (red) loss, MSE and KLD per epoch, as the tutorial draws them.

    `history` is `checkpoints.read_metrics(run_dir)` or `TrainResult.history`.
    """
    if not history:
        raise VaelabError("no epochs to plot: the metrics are empty")

    def column(key: str) -> list[float]:
        try:
            return [float(r[key] if isinstance(r, Mapping) else getattr(r, key)) for r in history]
        except (KeyError, AttributeError):
            raise VaelabError(f"the metrics have no {key!r} column") from None

    epochs = column("epoch")
    fig = Figure(figsize=(10, 5.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    marker = "o" if len(epochs) == 1 else None
    for split, colour in (("train", "tab:blue"), ("test", "tab:red")):
        for term, style in CURVES:
            ax.plot(
                epochs, column(f"{split}_{term}"), linestyle=style, color=colour, marker=marker,
                label=f"{split} {term.upper() if term != 'loss' else term}",
            )  # fmt: skip
    final = column("test_loss")[-1]
    ax.set_title(f"Learning curves over {len(epochs)} epochs (final test loss {final:.2f})")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Loss per image (tutorial units: MSE = sum of squares / 2)")
    ax.grid(True, alpha=0.4)
    ax.legend(ncols=2)
    return fig


def reconstructions(
    model: VAE, images: torch.Tensor, image_shape: tuple[int, int], count: int = 40, cols: int = 10
) -> Figure:
    """The first `count` images in rows of `cols`, each above its reconstruction decode(mu(x))."""
    _check_int("count", count, 1, 1000)
    inputs = _as_images(images[:count], image_shape)
    means, _ = posterior(model, images[:count])
    outputs = _decode(model, means, image_shape)
    blocks = math.ceil(len(inputs) / cols)
    fig = Figure(figsize=(9, 1.9 * blocks + 0.8), dpi=DPI, layout="constrained")
    fig.suptitle(
        f"First {len(inputs)} test images (input rows) and their reconstructions\n"
        "decoded from the posterior mean, decode(\u03bc(x))"
    )
    for block, ax in enumerate(fig.subplots(blocks, 1, squeeze=False)[:, 0]):
        part = slice(block * cols, (block + 1) * cols)
        pair = np.concatenate([_pad_row(inputs[part], cols), _pad_row(outputs[part], cols)])
        _show(ax, _mosaic(pair, cols))
        ax.set_xticks([])
        ax.set_yticks(_tile_centres(2, image_shape[0]), ["input", "reconstruction"])
        ax.tick_params(length=0)
    return fig


def _pad_row(tiles: np.ndarray, cols: int) -> np.ndarray:
    """A short last row filled with NaN tiles, so inputs and reconstructions stay aligned."""
    missing = cols - len(tiles)
    return np.concatenate([tiles, np.full((missing, *tiles.shape[1:]), np.nan, np.float32)])


def latent_scatter(
    model: VAE,
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
) -> Figure:
    """Posterior means of `images`, one colour and marker per class.

    With more than two latent dimensions, the first two principal components of the means.
    """
    means, _ = posterior(model, images)
    labels = np.asarray(torch.as_tensor(labels).cpu())
    fig = Figure(figsize=(10, 8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    coords, xlabel, ylabel, note = _plane(means, labels)
    colours = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for index, name in enumerate(class_names):
        chosen = labels == index
        if not chosen.any():
            continue
        marker = MARKERS[index % len(MARKERS)]
        edges = {"linewidths": 0.8} if marker == "+" else {"edgecolors": "none"}
        ax.scatter(
            coords[chosen, 0], coords[chosen, 1], s=9, color=colours(index % colours.N),
            marker=marker, alpha=0.55, label=name, **edges,
        )  # fmt: skip
    ax.set_title(f"Posterior means of {len(means)} test images{note}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.4)
    legend = ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=2.5)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    return fig


def _plane(means: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, str, str, str]:
    """2-D coordinates to scatter, axis labels, and a note for the title."""
    dims = means.shape[1]
    if dims == 1:
        jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(means))
        coords = np.stack([means[:, 0], labels + jitter], axis=1)
        return coords, "z1 (posterior mean)", "class index (jittered)", " (1-D latent space)"
    if dims == 2:
        return means, "z1 (posterior mean)", "z2 (posterior mean)", ""
    centred = means - means.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    share = singular**2 / max(float((singular**2).sum()), 1e-12)
    coords = centred @ components[:2].T
    return (
        coords,
        f"principal component 1 of the posterior means ({share[0]:.0%} of variance)",
        f"principal component 2 of the posterior means ({share[1]:.0%} of variance)",
        f"\nfirst two principal components of the {dims}-dimensional latent space",
    )


def check_grid(grid: int, span: float) -> None:
    """Refuse a manifold grid that cannot be drawn, before any work is done."""
    _check_int("--grid", grid, 2, 100)
    if not (math.isfinite(span) and span > 0):
        raise VaelabError(f"--span must be a finite number above 0, got {span}")


def manifold(
    model: VAE,
    image_shape: tuple[int, int],
    grid: int = 20,
    span: float = 2.0,
    images: torch.Tensor | None = None,
) -> Figure:
    """Images decoded over a grid x grid lattice of [-span, span]^2, top row y = +span.

    With more than two latent dimensions, the lattice spans the two dimensions whose posterior
    means (over `images`, required then) vary most; the others are 0.
    """
    check_grid(grid, span)
    latent_dim = model.config.latent_dim
    x, y = latent_grid(grid, span)
    z = np.zeros((grid * grid, latent_dim), dtype=np.float32)
    if latent_dim == 1:
        z = x[:grid, None].astype(np.float32)
        dims, note = (0,), ""
    elif latent_dim == 2:
        dims, note = (0, 1), ""
    else:
        if images is None:
            raise VaelabError(
                f"a manifold of a {latent_dim}-dimensional latent space needs images to choose "
                "the two dimensions to span"
            )
        dims = most_active_dims(posterior(model, images)[0])
        note = (
            f"\nz{dims[0] + 1} and z{dims[1] + 1}: the two dimensions whose posterior means vary "
            "most over the test set; all others 0"
        )
    if latent_dim >= 2:
        z[:, dims[0]], z[:, dims[1]] = x, y
    tiles = _decode(model, z, image_shape)
    half = span / (grid - 1)  # half a cell, so each tile is centred on its coordinate
    rows = 1 if latent_dim == 1 else grid
    fig = Figure(figsize=(9.5, 10 if rows > 1 else 2.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    top = span + half if rows > 1 else half
    _show(ax, _mosaic(tiles, grid, pad=0), extent=(-span - half, span + half, -top, top))
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


def samples(model: VAE, image_shape: tuple[int, int], count: int = 100, seed: int = 0) -> Figure:
    """`count` images decoded from z ~ N(0, I) drawn with `seed`."""
    _check_int("count", count, 1, 2500)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(count, model.config.latent_dim, generator=generator)
    tiles = _decode(model, z.numpy(), image_shape)
    cols = math.ceil(math.sqrt(count))
    fig = Figure(figsize=(9, 9.4), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _show(ax, _mosaic(tiles, cols))
    _no_ticks(ax)
    ax.set_title(f"{count} images decoded from z ~ N(0, I) (the prior), seed {seed}")
    return fig


def interpolation(
    model: VAE,
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
    image_shape: tuple[int, int],
    pairs: int = 5,
    steps: int = 10,
) -> Figure:
    """Straight lines from mu(A) to mu(B) for pairs of images of different classes, decoded.

    Each row: input A, `steps` decoded points from t = 0 to t = 1, input B.
    """
    _check_int("pairs", pairs, 1, 50)
    _check_int("steps", steps, 2, 50)
    labels = np.asarray(torch.as_tensor(labels).cpu())
    chosen = interpolation_pairs(labels, pairs)
    ends = [index for pair in chosen for index in pair]
    means, _ = posterior(model, images[ends])
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    inputs = _as_images(images[ends], image_shape)
    rows = []
    for k in range(len(chosen)):
        start, end = means[2 * k], means[2 * k + 1]
        path = _decode(model, (1 - t) * start + t * end, image_shape)
        rows.extend([inputs[2 * k][None], path, inputs[2 * k + 1][None]])
    cols = steps + 2
    fig = Figure(figsize=(10.5, 0.75 * len(chosen) + 1.1), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    _show(ax, _mosaic(np.concatenate(rows), cols))
    height, width = image_shape
    names = [f"{class_names[labels[a]]} \u2192 {class_names[labels[b]]}" for a, b in chosen]
    ax.set_yticks(_tile_centres(len(chosen), height), names)
    ticks = ["input A", *(f"{v:.2f}" for v in t[:, 0]), "input B"]
    ax.set_xticks(_tile_centres(cols, width), ticks, fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("t along the straight line z = (1 - t) \u03bc(A) + t \u03bc(B)")
    ax.set_title(
        f"Latent interpolation between {len(chosen)} pairs of test images"
        f"{' of different classes' if len(np.unique(labels)) > 1 else ''}, {steps} steps"
    )
    return fig


# ---------------------------------------------------------------- a run directory


@dataclass(frozen=True)
class RunData:
    """What the figures and the report of a run need: its model, config, data and history."""

    run_dir: Path
    model: VAE
    config: RunConfig
    dataset: Dataset
    history: list[dict[str, float]]


def open_run(
    run_dir: str | Path, dataset: Dataset | None = None, device: str | torch.device = "cpu"
) -> RunData:
    """Load a run's model and metrics, and its dataset (the one it was trained on, by default)."""
    run_dir = Path(run_dir)
    model = checkpoints.load(run_dir, device=device)
    config = checkpoints.load_config(run_dir)
    history = checkpoints.read_metrics(run_dir)
    dataset = dataset or load_dataset(config.data)
    if dataset.input_dim != model.config.input_dim:
        raise VaelabError(
            f"{run_dir}: the model expects {model.config.input_dim} pixels per image but the "
            f"data ({dataset.source}) has {dataset.input_dim}"
        )
    return RunData(run_dir, model, config, dataset, history)


def draw_figures(run: RunData, grid: int = 20, span: float = 2.0) -> dict[str, Figure]:
    """All six figures of a run, keyed by their file names in RUN/figures/."""
    data = run.dataset
    images, labels, shape = data.test_images, data.test_labels, data.image_shape
    return {
        "learning_curves.png": learning_curves(run.history),
        "reconstructions.png": reconstructions(run.model, images, shape),
        "latent.png": latent_scatter(run.model, images, labels, data.class_names),
        "manifold.png": manifold(run.model, shape, grid, span, images=images),
        "samples.png": samples(run.model, shape),
        "interpolation.png": interpolation(run.model, images, labels, data.class_names, shape),
    }


def figure_png(fig: Figure) -> bytes:
    """The figure rendered to PNG bytes by Agg, whatever backend the session uses."""
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

    Figures are derived from the run, so drawing them again replaces the previous ones.
    """
    check_grid(grid, span)
    return save_figures(open_run(run_dir, dataset, device), grid, span, log)


def save_figures(
    run: RunData, grid: int = 20, span: float = 2.0, log: Callable[[str], None] | None = None
) -> list[Path]:
    """`write_figures` for a run already opened with `open_run`."""
    out_dir = run.run_dir / FIGURES_DIR
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{out_dir}: cannot create the figures folder ({exc.strerror})") from None
    written = []
    for name, fig in draw_figures(run, grid, span).items():
        checkpoints.atomic_write_bytes(out_dir / name, figure_png(fig))
        written.append(out_dir / name)
        if log:
            log(f"wrote {out_dir / name}")
    return written
