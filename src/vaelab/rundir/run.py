"""A saved run opened for use: its model, config and data, checked to be the data it recorded."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from vaelab.config import DataConfig, RunConfig
from vaelab.data import Dataset, load_dataset, require_image_size
from vaelab.data.dataset import float_test_fingerprint, test_fingerprint
from vaelab.data.model_data import binarized
from vaelab.errors import VaelabError
from vaelab.models import VAE
from vaelab.rundir.files import (
    load_config,
    load_model,
    load_run_info,
    read_metrics,
)


@dataclass(frozen=True)
class Run:
    """A saved run opened for use: its model, config, the record beside the config, and its data."""

    run_dir: Path
    model: VAE
    config: RunConfig
    info: dict[str, Any]
    dataset: Dataset

    @cached_property
    def history(self) -> list[dict[str, float]]:
        """The rows of RUN/metrics.csv."""
        return read_metrics(self.run_dir)

    @property
    def test_classes(self) -> torch.Tensor | None:
        """The test labels a conditional model is given with the test images; None for other
        models (which take no labels)."""
        return self.dataset.test_labels if self.model.config.conditional else None

    @property
    def name(self) -> str:
        """The run directory's own name."""
        return self.run_dir.resolve().name


def open_run(
    run_dir: str | Path,
    dataset: Dataset | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    data: DataConfig | None = None,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> Run:
    """Open a run: its model (in eval mode on `device`), config and data.

    The data is `dataset`, else the data `data` names, else Fashion-MNIST from `data_dir`, else
    what the run was trained on. Data whose images have another size than the model's, or whose
    test split differs from the one the run recorded, is refused. A model of your own networks
    needs the `encoder` and `decoder` modules your code builds. A run trained on binarized
    images gets its test images binarized as in training (see `vaelab.data.model_data.binarized`;
    its training images are left as stored). Images mapped from a file are read as they are
    used: opening a run reads nothing of its training split.
    """
    run_dir = Path(run_dir)
    model = load_model(run_dir, device, encoder, decoder)
    config = load_config(run_dir)
    info = load_run_info(run_dir)
    if dataset is None:
        if data is None:
            _require_findable_data(config, info, run_dir)
            data = config.data if data_dir is None else DataConfig(data_dir=str(data_dir))
        dataset = load_dataset(data)
    require_image_size(dataset, model.config.input_dim, run_dir)
    require_same_test_data(info, dataset, run_dir)
    return Run(run_dir, model, config, info, binarized(dataset, config.data, train=False))


def _require_findable_data(config: RunConfig, info: dict[str, Any], run_dir: Path) -> None:
    """Refuse to guess the data of a run trained on images given in memory (not from a path)."""
    recorded: dict[str, Any] = info["dataset"] if isinstance(info.get("dataset"), dict) else {}
    in_memory = recorded.get("format") == "arrays" and config.data.source is None
    if in_memory and config.data.train_csv is None:
        raise VaelabError(
            f"{run_dir}: trained on images given in memory ({recorded.get('source', 'arrays')}); "
            "pass them again as dataset, or a file holding them as data",
            parameters=("dataset", "data"),
        )


def require_same_test_data(info: dict[str, Any], dataset: Dataset, run_dir: str | Path) -> None:
    """Refuse a test set other than the one the run recorded (runs of vaelab 0.1 recorded none)."""
    recorded = (
        info.get("dataset", {}).get("test_sha256")
        if isinstance(info.get("dataset"), dict)
        else None
    )
    if recorded is None or recorded == test_fingerprint(dataset):
        return
    if recorded == float_test_fingerprint(dataset):  # recorded by an earlier version
        return
    raise VaelabError(
        f"{run_dir}: the test images of {dataset.source} are not those this run was tested on; "
        "point vaelab at the files it was trained on with data (and test_data), data_dir, or "
        "train_csv and test_csv",
        parameters=("data", "test_data", "data_dir", "train_csv", "test_csv"),
    )
