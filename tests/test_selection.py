"""Validation split, model selection, early stopping, binarization and the per-epoch test pass."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from tests.helpers import make_tiny_dataset, stop_training_at
from vaelab import rundir
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data.model_data import binarized, model_data
from vaelab.errors import VaelabError
from vaelab.training import EpochMetrics, TrainingInterrupted, train
from vaelab.training.guard import NothingToResume
from vaelab.training.reporters import format_epoch
from vaelab.training.selection import best_epoch, stopped_early


def config_of(data: dict | None = None, **train_options) -> RunConfig:
    settings = {"epochs": 3, "batch_size": 32, "test_batch_size": 50, "lr": 3e-3,
                "lr_schedule": "constant", "device": "cpu", **train_options}  # fmt: skip
    return RunConfig(
        model=ModelConfig(hidden=(8, 4)), data=DataConfig(**(data or {})),
        train=TrainConfig(**settings),
    )  # fmt: skip


def rows(*val_losses: float) -> list[EpochMetrics]:
    return [EpochMetrics(i + 1, 0.0, 1.0, 1.0, 0.0, val_loss=v) for i, v in enumerate(val_losses)]


def weights(path):
    return rundir.read_tensors(path)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_epoch_is_the_first_lowest_validation_loss():
    assert best_epoch(rows(3.0, 2.0, 2.0, 2.5)) == 2
    assert best_epoch([EpochMetrics(1, 0.0, 1.0, 1.0, 0.0)]) is None
    assert not stopped_early(rows(3.0, 2.0, 2.5), 2)
    assert stopped_early(rows(3.0, 2.0, 2.5, 2.6), 2)
    assert not stopped_early(rows(3.0, 2.0, 2.5, 2.6), 0)


def test_a_validation_split_is_seeded_disjoint_and_keeps_the_order():
    dataset = make_tiny_dataset()
    data = model_data(dataset, DataConfig(val_split=0.25, split_seed=3))
    assert (len(data.train), len(data.val)) == (192, 64)
    again = model_data(dataset, DataConfig(val_split=64, split_seed=3))
    assert torch.equal(data.val.tensor(), again.val.tensor()) and torch.equal(
        data.train.tensor(), again.train.tensor()
    )
    other = model_data(dataset, DataConfig(val_split=0.25, split_seed=4))
    assert not torch.equal(data.val.tensor(), other.val.tensor())
    rows_of = {tuple(r.tolist()): i for i, r in enumerate(dataset.train_images)}
    index = [rows_of[tuple(r.tolist())] for r in data.train]
    assert index == sorted(index)  # the training rows keep their order


def test_with_a_validation_split_the_log_and_metrics_show_validation_not_test(tmp_path):
    lines: list[str] = []
    result = train(config_of({"val_split": 0.25}), make_tiny_dataset(), run_dir=tmp_path / "r",
                   log=lines.append)  # fmt: skip
    history = rundir.read_metrics(tmp_path / "r")
    assert all(math.isfinite(row["val_loss"]) and math.isnan(row["test_loss"]) for row in history)
    epoch_line = next(line for line in lines if line.startswith("epoch 01"))
    assert "val_loss" in epoch_line and "test_loss" not in epoch_line
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    assert info["dataset"]["val_images"] == 64 and info["dataset"]["train_images"] == 192
    best = min(history, key=lambda row: row["val_loss"])["epoch"]
    assert info["selection"] == {
        "weights": "best-validation", "best_epoch": best, "epochs_run": 3, "epochs": 3,
        "early_stopping": 0, "stopped_early": False,
    }  # fmt: skip
    assert result.best_epoch == best
    assert (tmp_path / "r" / rundir.LAST_WEIGHTS_FILE).is_file()


def test_test_each_epoch_yes_evaluates_both(tmp_path):
    result = train(config_of({"val_split": 0.25}, test_each_epoch="yes"), make_tiny_dataset(),
                   log=None)  # fmt: skip
    assert all(row.tested and row.validated for row in result.history)
    plain = train(config_of(test_each_epoch="no"), make_tiny_dataset(), log=None)
    assert not any(row.tested or row.validated for row in plain.history)


def worsening_validation(monkeypatch, best: int) -> None:
    """Make the validation loss fall until epoch `best`, then rise, whatever the model does."""
    from vaelab.training import loop

    original = loop._pass_metrics
    epochs = {"val": 0}

    def pass_metrics(split, model, images, config, labels=None):
        values = original(split, model, images, config, labels)
        if split == "val" and values:
            epochs["val"] += 1
            values["val_loss"] = float(abs(epochs["val"] - best) + 1)
        return values

    monkeypatch.setattr(loop, "_pass_metrics", pass_metrics)


def test_early_stopping_keeps_the_best_epoch_and_stops_after_the_patience(tmp_path, monkeypatch):
    worsening_validation(monkeypatch, best=2)
    config = config_of({"val_split": 0.25}, epochs=10, early_stopping=2)
    result = train(config, make_tiny_dataset(), run_dir=tmp_path / "stopped", log=None)
    assert [row.epoch for row in result.history] == [1, 2, 3, 4]
    info = rundir.load_run_info(tmp_path / "stopped")
    assert info["selection"]["stopped_early"] and info["selection"]["best_epoch"] == 2
    # The weights of epoch 2 and of epoch 4, as the same run without early stopping has them.
    short = replace(config, train=replace(config.train, epochs=2, early_stopping=0))
    train(short, make_tiny_dataset(), run_dir=tmp_path / "two", log=None)
    longer = replace(config, train=replace(config.train, epochs=4, early_stopping=0))
    train(longer, make_tiny_dataset(), run_dir=tmp_path / "four", log=None)
    best = weights(tmp_path / "stopped" / rundir.WEIGHTS_FILE)
    assert same_weights(best, weights(tmp_path / "two" / rundir.LAST_WEIGHTS_FILE))
    last = weights(tmp_path / "stopped" / rundir.LAST_WEIGHTS_FILE)
    assert same_weights(last, weights(tmp_path / "four" / rundir.LAST_WEIGHTS_FILE))
    assert same_weights(
        {k: v for k, v in result.model.state_dict().items()}, best
    )  # the returned model is the selected one
    with pytest.raises(NothingToResume, match="stopped early after epoch 4"):
        train(config, make_tiny_dataset(), run_dir=tmp_path / "stopped", resume=True, log=None)


def test_early_stopping_without_a_validation_split_is_refused():
    with pytest.raises(VaelabError, match="early_stopping needs a validation set"):
        train(config_of(early_stopping=3), make_tiny_dataset(), log=None)


def test_a_resumed_run_selects_the_same_weights(tmp_path, monkeypatch):
    config = config_of({"val_split": 0.25, "binarize": "dynamic"}, epochs=4)
    train(config, make_tiny_dataset(), run_dir=tmp_path / "whole", log=None)
    stop_training_at(monkeypatch, epoch=3, step=2)
    with pytest.raises(TrainingInterrupted):
        train(config, make_tiny_dataset(), run_dir=tmp_path / "cut", log=None)
    monkeypatch.undo()
    train(config, make_tiny_dataset(), run_dir=tmp_path / "cut", resume=True, log=None)
    for name in (rundir.WEIGHTS_FILE, rundir.LAST_WEIGHTS_FILE):
        assert same_weights(weights(tmp_path / "whole" / name), weights(tmp_path / "cut" / name))
    whole, cut = rundir.read_metrics(tmp_path / "whole"), rundir.read_metrics(tmp_path / "cut")
    for row in (*whole, *cut):
        row.pop("seconds")
    assert json.dumps(whole) == json.dumps(cut)


def test_dynamic_binarization_is_seeded_and_changes_training():
    dataset = make_tiny_dataset()
    first = train(config_of({"binarize": "dynamic"}, epochs=1), dataset, log=None)
    again = train(config_of({"binarize": "dynamic"}, epochs=1), dataset, log=None)
    plain = train(config_of(epochs=1), dataset, log=None)
    assert first.history[0].train_loss == again.history[0].train_loss
    assert first.history[0].train_loss != plain.history[0].train_loss


def test_static_binarization_draws_train_and_test_once_from_the_split_seed():
    dataset = make_tiny_dataset()
    static = binarized(dataset, DataConfig(binarize="static", split_seed=5))
    for images in (static.train_images, static.test_images):
        assert set(images.tensor().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(
        static.test_images.tensor(),
        binarized(dataset, DataConfig(binarize="static", split_seed=5)).test_images.tensor(),
    )
    dynamic = binarized(dataset, DataConfig(binarize="dynamic", split_seed=5))
    assert torch.equal(
        dynamic.train_images.tensor(), dataset.train_images.tensor()
    )  # drawn per batch instead
    assert set(dynamic.test_images.tensor().unique().tolist()) <= {0.0, 1.0}
    # Each pixel is 1 with its intensity's probability.
    grey = torch.full((4000, 16), 0.3)
    grey_set = replace(dataset, train_images=grey, train_labels=None, test_labels=None,
                       class_names=())  # fmt: skip
    drawn = binarized(grey_set, DataConfig(binarize="static")).train_images.tensor()
    assert abs(drawn.mean().item() - 0.3) < 0.02


def test_the_epoch_line_shows_the_passes_that_ran():
    row = EpochMetrics(1, 2.0, 30.0, 25.0, 5.0, val_loss=20.0, val_reconstruction=15.0,
                       val_kld=5.0)  # fmt: skip
    assert format_epoch(row) == (
        "epoch 01 - 2.0s - loss 30.00 - val_loss 20.00 (MSE 15.00 | KLD 5.00)"
    )
    tutorial = EpochMetrics(1, 2.0, 30.0, 25.0, 5.0, 19.0, 14.0, 5.0)
    assert format_epoch(tutorial) == (
        "epoch 01 - 2.0s - loss 30.00 - test_loss 19.00 (MSE 14.00 | KLD 5.00)"
    )
