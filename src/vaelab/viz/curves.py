"""The learning curves: a run's history as the tutorial draws it, needing no model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vaelab._extras import require_extra

require_extra("plots", "matplotlib")

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab.errors import VaelabError
from vaelab.training.reporters import reconstruction_label

DPI = 100
CURVES = (("loss", "-"), ("reconstruction", ":"), ("kld", "--"))
# Train and test as the tutorial colours them; the validation split, when there is one, between.
SPLITS = (
    ("train", "train", "tab:blue"),
    ("val", "validation", "tab:green"),
    ("test", "test", "tab:red"),
)


def learning_curves(
    history: Sequence[Mapping[str, float] | Any],
    likelihood: str = "tutorial-mse",
    selected_epoch: int | None = None,
) -> Figure:
    """Train (blue), validation (green) and test (red) loss, reconstruction and KLD per epoch.

    `history` is `Run.history` (metrics.csv) or `TrainResult.history`; `likelihood` names the
    reconstruction term in the legend (MSE for the tutorial's). A split not measured (a missing
    column, or NaN in every epoch) is left out; epochs it skipped are gaps. `selected_epoch`,
    when the saved weights are those of an earlier epoch, is marked with a vertical line.
    """
    if not history:
        raise VaelabError("no epochs to plot: the metrics are empty")
    epochs = _column(history, "epoch", required=True)
    fig = Figure(figsize=(10, 5.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for split, name, colour in SPLITS:
        for term, style in CURVES:
            values = _column(history, f"{split}_{term}", required=split == "train")
            if any(math.isfinite(v) for v in values):
                marker = "o" if _has_lone_points(values) else None
                ax.plot(
                    epochs, values, linestyle=style, color=colour, marker=marker,
                    label=f"{name} {_term_label(term, likelihood)}",
                )  # fmt: skip
    if selected_epoch is not None:
        ax.axvline(selected_epoch, color="0.35", linewidth=1, linestyle=(0, (1, 3)),
                   label=f"weights kept: epoch {selected_epoch}")  # fmt: skip
    ax.set_title(f"Learning curves over {len(epochs)} epochs{_final(history)}")
    _label_axes(ax)
    return fig


def _column(history: Sequence[Mapping[str, float] | Any], key: str, required: bool) -> list[float]:
    """`key` of every row as floats; NaN where a row lacks it, unless it is `required`."""
    values = []
    for row in history:
        value = row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)
        if value is None:
            if required:
                raise VaelabError(f"the metrics have no {key!r} column")
            value = math.nan
        values.append(float(value))
    return values


def _has_lone_points(values: Sequence[float]) -> bool:
    """Whether a measured value has no measured neighbour, so that only a marker can show it."""
    finite = [math.isfinite(v) for v in values]
    padded = [False, *finite, False]
    return any(here and not (padded[i] or padded[i + 2]) for i, here in enumerate(finite))


def _final(history: Sequence[Mapping[str, float] | Any]) -> str:
    """' (final test loss X)' from the last epoch that measured one, else validation's."""
    for split, name, _ in reversed(SPLITS[1:]):
        measured = [v for v in _column(history, f"{split}_loss", False) if math.isfinite(v)]
        if measured:
            return f" (final {name} loss {measured[-1]:.2f})"
    return ""


def _label_axes(ax: Axes) -> None:
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Loss per image (tutorial units: MSE = sum of squares / 2)")
    ax.grid(True, alpha=0.4)
    ax.legend(ncols=2)


def _term_label(term: str, likelihood: str) -> str:
    if term == "reconstruction":
        return reconstruction_label(likelihood)
    return term.upper() if term == "kld" else term
