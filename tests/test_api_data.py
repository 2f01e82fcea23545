"""vaelab.train(config, data=...): arrays, tensors and paths, and reopening such runs."""

from __future__ import annotations

import numpy as np
import pytest

import vaelab
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError

CONFIG = RunConfig(
    model=ModelConfig(hidden=(8, 4)),
    train=TrainConfig(epochs=1, batch_size=20, test_batch_size=50, device="cpu"),
)


def images(n: int = 120) -> np.ndarray:
    return (np.random.default_rng(0).random((n, 6, 5)) * 255).astype(np.uint8)


def test_numpy_images_train_with_a_seeded_test_split(tmp_path):
    result = vaelab.train(CONFIG, data=images(), run_dir=tmp_path / "r", log=None)
    info = vaelab.rundir.load_run_info(tmp_path / "r")
    assert info["dataset"]["format"] == "arrays"
    assert info["dataset"]["test_images"] == 12 and info["dataset"]["labelled"] is False
    assert result.model.config.shape == (1, 6, 5)


def test_a_run_trained_in_memory_asks_for_its_data_when_reopened(tmp_path):
    x = images()
    vaelab.train(CONFIG, data=x, run_dir=tmp_path / "r", log=None)
    with pytest.raises(VaelabError, match="trained on images given in memory"):
        vaelab.open_run(tmp_path / "r")
    dataset = vaelab.data.as_dataset(x, CONFIG.data)
    assert len(vaelab.open_run(tmp_path / "r", dataset=dataset).dataset.test_images) == 12


def test_a_path_given_as_data_is_recorded_so_the_run_finds_it_again(tmp_path):
    np.save(tmp_path / "x.npy", images())
    vaelab.train(CONFIG, data=str(tmp_path / "x.npy"), run_dir=tmp_path / "r", log=None)
    config = vaelab.rundir.load_config(tmp_path / "r")
    assert config.data.source == str((tmp_path / "x.npy").resolve())
    run = vaelab.open_run(tmp_path / "r")
    assert run.dataset.format == "npy" and len(run.dataset.test_images) == 12


def test_dataset_and_data_together_are_refused(tiny_dataset):
    with pytest.raises(VaelabError, match="give dataset or data, not both"):
        vaelab.train(CONFIG, tiny_dataset, data=images(), log=None)
