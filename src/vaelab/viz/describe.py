"""What a run says about its data and its weights, in the words the report and figures use.

Both come from config.json: its "dataset" section (source, format, image size, channels,
labels) and its "selection" section (which epoch's weights were kept). Runs of earlier vaelab
versions lack some keys; the data's own attributes stand in for them, and a run without a
"selection" kept its last epoch's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vaelab.data import Dataset

CHANNEL_WORDS = {1: "greyscale", 3: "RGB"}


@dataclass(frozen=True)
class DataFacts:
    """The data of a run as the report describes it."""

    source: str
    format: str  # empty when not recorded
    channels: int
    height: int
    width: int
    labelled: bool
    classes: int


@dataclass(frozen=True)
class Selection:
    """Which epoch's weights a run kept: the best validation epoch, or the last."""

    weights: str  # "best-validation" or "last"
    best_epoch: int | None
    epochs_run: int | None
    stopped_early: bool


def _section(info: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = info.get(name)
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_facts(info: Mapping[str, Any], dataset: Dataset) -> DataFacts:
    """The run's data from config.json's "dataset" section, the `dataset` filling its gaps."""
    recorded = _section(info, "dataset")
    shape = recorded.get("image_shape")
    sides = shape if isinstance(shape, list) and len(shape) == 2 else dataset.image_shape
    height, width = (_int(side) or fallback for side, fallback in zip(sides, dataset.image_shape))
    labelled = recorded.get("labelled")
    return DataFacts(
        source=str(recorded.get("source") or dataset.source),
        format=str(recorded.get("format") or dataset.format or ""),
        channels=_int(recorded.get("channels")) or dataset.channels,
        height=height,
        width=width,
        labelled=labelled if isinstance(labelled, bool) else dataset.labelled,
        classes=len(dataset.class_names),
    )


def data_sentence(facts: DataFacts) -> str:
    """'mnist.npz (npz): 10,000 RGB images of 32 x 32 pixels, 10 classes' and the like."""
    kind = CHANNEL_WORDS.get(facts.channels, f"{facts.channels}-channel")
    stored = f" ({facts.format})" if facts.format else ""
    classes = f"{facts.classes} classes" if facts.classes else "labelled"
    labels = classes if facts.labelled else "unlabelled"
    size = f"{facts.height} \u00d7 {facts.width}"
    return f"{facts.source}{stored}: {kind} images of {size} pixels, {labels}"


def weight_selection(info: Mapping[str, Any]) -> Selection | None:
    """config.json's "selection" section, or None when the run has none (no validation split)."""
    recorded = _section(info, "selection")
    weights = recorded.get("weights")
    if weights not in ("best-validation", "last"):
        return None
    return Selection(
        weights=str(weights),
        best_epoch=_int(recorded.get("best_epoch")),
        epochs_run=_int(recorded.get("epochs_run")),
        stopped_early=recorded.get("stopped_early") is True,
    )


def selected_epoch(info: Mapping[str, Any]) -> int | None:
    """The epoch whose weights were kept when it was the best validation epoch, else None."""
    selection = weight_selection(info)
    if selection is None or selection.weights != "best-validation":
        return None
    return selection.best_epoch


def selection_sentence(selection: Selection | None, epochs: int) -> str:
    """'best validation epoch 7 of 10, stopped early', or 'last epoch (10)'."""
    run = selection.epochs_run if selection and selection.epochs_run else epochs
    early = ", stopped early" if selection and selection.stopped_early else ""
    if selection and selection.weights == "best-validation" and selection.best_epoch:
        return f"best validation epoch {selection.best_epoch} of {run}{early}"
    return f"last epoch ({run}){early}"
