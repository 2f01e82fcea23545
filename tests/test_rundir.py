"""The run directory: runs of vaelab 0.1 still open, plot and resume; one loader of a run."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import make_tiny_dataset
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    image_shape,
    load_model,
    open_run,
    read_metrics,
    read_safetensors,
)
from vaelab.training import TrainingInterrupted, train
from vaelab.training.checkpoint import METADATA_KEY
from vaelab.training.guard import RunGuard
from vaelab.viz import plots

OLD_HEADER = "epoch,seconds,train_loss,train_mse,train_kld,test_loss,test_mse,test_kld"


def tiny_config(epochs: int = 2) -> RunConfig:
    return RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        train=TrainConfig(epochs=epochs, batch_size=64, test_batch_size=64, precision="32"),
    )


def test_metrics_of_a_0_1_run_are_read_under_todays_names(tmp_path):
    (tmp_path / METRICS_FILE).write_text(f"{OLD_HEADER}\n1,2.5,30,20,10,29,19,10\n")
    (row,) = read_metrics(tmp_path)
    assert row["train_reconstruction"] == 20 and row["test_reconstruction"] == 19
    assert "train_mse" not in row
    plots.learning_curves([row])  # the figures take them as they are


def test_a_0_1_checkpoint_with_mse_columns_resumes_to_the_same_run(tmp_path, monkeypatch):
    dataset = make_tiny_dataset()
    reference = train(tiny_config(), dataset, run_dir=tmp_path / "ref", log=None)
    original = RunGuard.after_step

    def stop_inside_epoch_2(self, epoch, progress):
        if (epoch, progress.step) == (2, 1):
            self.stop.signum = signal.SIGTERM
        return original(self, epoch, progress)

    monkeypatch.setattr(RunGuard, "after_step", stop_inside_epoch_2)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(), dataset, run_dir=tmp_path / "old", log=None)
    monkeypatch.undo()
    path = tmp_path / "old" / CHECKPOINT_FILE
    tensors, metadata = read_safetensors(path)
    meta = json.loads(metadata[METADATA_KEY])
    renamed = {"train_reconstruction": "train_mse", "test_reconstruction": "test_mse"}
    meta["history"] = [{renamed.get(k, k): v for k, v in row.items()} for row in meta["history"]]
    save_file(load_file(path), path, metadata={METADATA_KEY: json.dumps(meta)})
    assert '"train_mse"' in read_safetensors(path)[1][METADATA_KEY]

    resumed = train(tiny_config(), dataset, run_dir=tmp_path / "old", resume=True, log=None)
    for ours, theirs in zip(resumed.history, reference.history):
        assert ours.train_loss == theirs.train_loss and ours.test_loss == theirs.test_loss
    old, new = load_model(tmp_path / "old"), load_model(tmp_path / "ref")
    assert all(
        torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values())
    )
    header = (tmp_path / "old" / METRICS_FILE).read_text().splitlines()[0]
    assert header.split(",")[3] == "train_reconstruction"
    assert len(tensors) > 0


def test_open_run_gives_model_config_data_and_history(tmp_path):
    dataset = make_tiny_dataset()
    train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", log=None)
    run = open_run(tmp_path / "r", dataset)
    assert run.name == "r" and run.dataset is dataset and not run.model.training
    assert run.config.model.input_dim == 16 and len(run.history) == 1
    assert run.info["dataset"]["image_shape"] == [4, 4]


def test_open_run_refuses_data_of_another_image_size(tmp_path):
    dataset = make_tiny_dataset()
    train(tiny_config(epochs=1), dataset, run_dir=tmp_path / "r", log=None)
    smaller = dataclasses.replace(dataset, image_shape=(2, 2))
    with pytest.raises(VaelabError, match="the model expects 16 pixels per image"):
        open_run(tmp_path / "r", smaller)


def test_image_shape_comes_from_config_json_or_is_square(tmp_path):
    assert image_shape({"dataset": {"image_shape": [2, 8]}}, 16, tmp_path) == (2, 8)
    assert image_shape({"dataset": {"image_shape": [3, 3]}}, 16, tmp_path) == (4, 4)
    assert image_shape({}, 16, tmp_path) == (4, 4)
    with pytest.raises(VaelabError, match="does not say the shape"):
        image_shape({}, 15, tmp_path)
