"""The run directory: runs of vaelab 0.1 still open, plot and resume; one loader of a run."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import make_tiny_dataset, stop_training_at
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.rundir import (
    CHECKPOINT_FILE,
    LOCK_FILE,
    METRICS_FILE,
    RunBusy,
    RunExists,
    claim_run_dir,
    image_shape,
    load_model,
    open_run,
    read_metrics,
    read_safetensors,
    run_lock,
)
from vaelab.training import TrainingInterrupted, train
from vaelab.training.checkpoint import METADATA_KEY
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
    stop_training_at(monkeypatch, epoch=2, step=1, signum=signal.SIGTERM)
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
    smaller = dataclasses.replace(
        dataset,
        train_images=dataset.train_images.tensor().reshape(-1, 4, 4)[:, :2, :2].reshape(-1, 4),
        test_images=dataset.test_images.tensor().reshape(-1, 4, 4)[:, :2, :2].reshape(-1, 4),
        image_shape=(2, 2),
    )
    with pytest.raises(VaelabError, match="the model expects 16 values per image"):
        open_run(tmp_path / "r", smaller)


def test_image_shape_comes_from_config_json_or_is_square(tmp_path):
    assert image_shape({"dataset": {"image_shape": [2, 8]}}, 16, tmp_path) == (2, 8)
    assert image_shape({"dataset": {"image_shape": [3, 3]}}, 16, tmp_path) == (4, 4)
    assert image_shape({}, 16, tmp_path) == (4, 4)
    with pytest.raises(VaelabError, match="does not say the shape"):
        image_shape({}, 15, tmp_path)


# ---------------------------------------------------------------- the lock of a run directory


def test_a_run_lock_refuses_another_holder_naming_its_pid_and_is_reentrant(tmp_path):
    import fcntl
    import os

    run = tmp_path / "r"
    run.mkdir()
    with run_lock(run):
        assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with run_lock(run):  # the same process may take it again
            pass
        assert (run / LOCK_FILE).exists()
        # Another holder is another open file description, as another process would have.
        fd = os.open(run / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not (run / LOCK_FILE).exists()
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    try:
        busy = r"another vaelab process \(PID 4242\)"
        with pytest.raises(RunBusy, match=busy) as info, run_lock(run):
            pass
        assert info.value.pid == 4242
    finally:
        os.close(fd)
    with run_lock(run):  # the kernel dropped the lock with its holder's descriptor
        pass


def test_a_new_run_directory_is_made_by_one_mkdir_and_a_busy_one_is_left_alone(tmp_path):
    import fcntl
    import os

    run = tmp_path / "runs" / "r"
    with claim_run_dir(run) as first:
        assert first.created and run.is_dir()
        first.keep = True
    with claim_run_dir(run) as again:  # an empty directory is used as it is, not made
        assert not again.created
        again.keep = True
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # another process's start
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RunBusy), claim_run_dir(run, overwrite=True):
            pass
        assert [p.name for p in run.iterdir()] == [LOCK_FILE]  # neither removed nor touched
    finally:
        os.close(fd)


def test_a_start_killed_before_its_first_checkpoint_says_what_to_do(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(RunExists, match="already exists; pass overwrite=True"):
        claim_run_dir(run).__enter__()
    with pytest.raises(VaelabError, match="stopped before its first checkpoint.*overwrite=True"):
        claim_run_dir(run, resume=True).__enter__()
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_metrics_columns_are_the_fields_of_epoch_metrics():
    from dataclasses import fields

    from vaelab.rundir import METRICS_COLUMNS
    from vaelab.training import EpochMetrics

    assert tuple(f.name for f in fields(EpochMetrics)) == METRICS_COLUMNS


def test_files_vaelab_writes_take_the_umask_not_0600(tmp_path):
    import os
    import stat

    from vaelab._io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
    (tmp_path / "new.json").chmod(0o600)
    atomic_write_text(tmp_path / "new.json", "{}")  # a rewrite keeps the file's own mode
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o600


def test_json_that_cannot_be_parsed_safely_is_one_error(tmp_path):
    from vaelab._io import parse_json

    with pytest.raises(VaelabError, match="x.json: JSON nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    with pytest.raises(VaelabError, match="x.json: not valid JSON"):
        parse_json("9" * 5000, "x.json")
    with pytest.raises(VaelabError, match="x.json: not valid JSON"):
        parse_json(b"\xff{", "x.json")
