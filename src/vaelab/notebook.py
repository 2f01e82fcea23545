"""vaelab in a Jupyter notebook: the latent explorer in an output cell (`explore`) and a training
progress bar drawn as a notebook widget (`NotebookProgressBar`).

`explore` needs the ``vaelab[notebook]`` extra (anywidget, ipywidgets) for the interactive
explorer; without it, or in a front end that cannot show widgets, it shows the latent scatter as a
static figure (``vaelab[plots]``) with one line saying why.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm as auto_tqdm

from vaelab.config import DataConfig
from vaelab.data import Dataset
from vaelab.data.dataset import require_image_size
from vaelab.data.layout import shared_untold
from vaelab.data.memory import as_dataset
from vaelab.errors import MissingExtra, VaelabError
from vaelab.explorer.core import MAX_POINTS, Explorer, evenly_spaced, explorer_of
from vaelab.models import VAE
from vaelab.rundir import Run, open_run
from vaelab.training.reporters import ProgressBar


class NotebookProgressBar(ProgressBar):
    """`ProgressBar` drawn by `tqdm.auto`: a widget bar in a notebook, text in a terminal."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.bar = auto_tqdm(total=steps, desc=f"epoch {epoch:02d}", leave=False, **self.options)


class StaticView:
    """The latent scatter of an explorer as a figure, under a one-line note; shown by Jupyter
    (and nbconvert, and the docs) through `_repr_mimebundle_`."""

    def __init__(self, explorer: Explorer, images: torch.Tensor, note: str) -> None:
        self.explorer = explorer
        self.images = images
        self.note = note

    def png(self) -> bytes:
        """The scatter as PNG bytes (needs ``vaelab[plots]``)."""
        from vaelab.viz.latent_plots import latent_scatter
        from vaelab.viz.plots import figure_png

        labels = self.explorer.labels
        fig = latent_scatter(self.explorer.model, self.images, labels, self.explorer.class_names)
        fig.set_size_inches(7, 5.6)
        return figure_png(fig)

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, str]:
        image = base64.b64encode(self.png()).decode("ascii")
        note = html.escape(f"vaelab.explore: {self.note}")
        shown = f'<p>{note}</p>\n<img alt="latent scatter" src="data:image/png;base64,{image}">'
        return {"text/plain": f"vaelab.explore: {self.note}", "text/html": shown}


def explore(model_or_run: VAE | Run | str | Path, data: Any = None) -> Any:
    """The latent explorer of a model or a run, shown inside the notebook: the test images'
    latent means, the image decoded under the pointer, the path between two clicked points and
    samples from the prior, as `vaelab serve` shows them, with no server.

    `model_or_run` is a `VAE`, a `Run` (`vaelab.open_run`) or a run directory. The images are
    `data`: a vaelab `Dataset` (its test split), images as `vaelab.train` takes them (an array,
    `(images, labels)`, a torch Dataset, a path), all of them shown; for a run, by default its own
    test set. Returns the widget, or without ``vaelab[notebook]`` the static figure.
    """
    explorer, images = _explorer(model_or_run, data)
    try:
        from vaelab.explorer.widget import ExplorerWidget
    except MissingExtra as missing:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise missing from None
        return StaticView(explorer, images, f"{missing}; here is {_NOTE_STATIC}")
    from vaelab.explorer.widget import NO_WIDGETS_NOTE

    return ExplorerWidget(explorer, fallback=StaticView(explorer, images, NO_WIDGETS_NOTE))


_NOTE_STATIC = "the latent scatter as a static figure"


def _explorer(model_or_run: Any, data: Any) -> tuple[Explorer, torch.Tensor]:
    """The explorer, and the test images it shows (for the static figure)."""
    if isinstance(model_or_run, (str, Path)):
        dataset = None if data is None else _as_test_set(data)
        model_or_run = open_run(model_or_run, dataset, device="cpu")
    if isinstance(model_or_run, Run):
        test = model_or_run.dataset if data is None else _as_test_set(data)
        model, name = model_or_run.model, model_or_run.name
    elif isinstance(model_or_run, VAE):
        if data is None:
            raise VaelabError(
                "explore(model, data): a model needs the images to explore (data)",
                parameters=("data",),
            )
        test, model, name = _as_test_set(data), model_or_run.eval(), "model"
    else:
        raise VaelabError(
            f"model_or_run: {type(model_or_run).__name__} is not a VAE, a Run or a run directory",
            parameters=("model_or_run",),
        )
    require_image_size(test, model.config.input_dim, name)
    explorer = explorer_of(model, test, name)
    return explorer, test.test_images[evenly_spaced(len(test.test_images), MAX_POINTS)]


def _as_test_set(data: Any) -> Dataset:
    """`data` as a Dataset whose test split is every image of it (a Dataset: its test split)."""
    if isinstance(data, Dataset):
        return data
    with shared_untold():  # the same images as both sets, so that every one is a test image
        return as_dataset(data, DataConfig(), test_data=data)
