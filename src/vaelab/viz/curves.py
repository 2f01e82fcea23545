"""The learning curves: a run's history as the tutorial draws it, needing no model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vaelab._extras import require_extra

require_extra("plots", "matplotlib")

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab.errors import VaelabError
from vaelab.training.reporters import reconstruction_label

DPI = 100
CURVES = (("loss", "-"), ("reconstruction", ":"), ("kld", "--"))


def learning_curves(
    history: Sequence[Mapping[str, float] | Any], likelihood: str = "tutorial-mse"
) -> Figure:
    """Train (blue) and test (red) loss, reconstruction and KLD per epoch, as the tutorial draws.

    `history` is `Run.history` (metrics.csv) or `TrainResult.history`; `likelihood` names the
    reconstruction term in the legend (MSE for the tutorial's).
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
                label=f"{split} {_term_label(term, likelihood)}",
            )  # fmt: skip
    final = column("test_loss")[-1]
    ax.set_title(f"Learning curves over {len(epochs)} epochs (final test loss {final:.2f})")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Loss per image (tutorial units: MSE = sum of squares / 2)")
    ax.grid(True, alpha=0.4)
    ax.legend(ncols=2)
    return fig


def _term_label(term: str, likelihood: str) -> str:
    if term == "reconstruction":
        return reconstruction_label(likelihood)
    return term.upper() if term == "kld" else term
