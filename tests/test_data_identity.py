"""Data cannot be silently wrong: pixel ranges are checked, and a run knows its data beyond doubt
(absolute paths and a fingerprint of the test split), whatever the working directory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_dataset, synthetic_images, write_csv
from vaelab import encode
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import Dataset
from vaelab.data.dataset import as_unit_images
from vaelab.errors import VaelabError
from vaelab.evaluation import evaluate
from vaelab.models import VAE
from vaelab.models.vae import MAX_PARAMETERS, parameter_count
from vaelab.rundir import load_run_info, open_run
from vaelab.training import train


def tiny_model() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(input_dim=16, hidden=(8, 4))).eval()


# ---------------------------------------------------------------- pixel ranges


def test_uint8_images_are_scaled_by_1_over_255_everywhere():
    model = tiny_model()
    pixels = synthetic_images(10, seed=3)[0]  # uint8 0-255, 10 x 4 x 4
    as_floats = torch.from_numpy(pixels.astype(np.float32) / 255).reshape(10, 16)
    assert torch.equal(encode(model, pixels), encode(model, as_floats))
    assert evaluate(model, torch.from_numpy(pixels).reshape(10, 16)).loss == pytest.approx(
        evaluate(model, as_floats).loss
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.full((2, 16), 255.0), r"must lie in \[0, 1\], found min 255 and max 255; 0-255"),
        (np.full((2, 16), -0.5), r"found min -0.5 and max -0.5"),
        (np.full((2, 16), np.nan), "NaN or infinite"),
        (np.full((2, 16), np.inf), "NaN or infinite"),
        (np.zeros((2, 16), dtype=np.int64), "pixels of type int64 are not intensities"),
    ],
)
def test_images_that_are_not_intensities_are_refused(values, message):
    with pytest.raises(VaelabError, match=message):
        encode(tiny_model(), values)
    with pytest.raises(VaelabError, match=message):
        evaluate(tiny_model(), torch.as_tensor(values))
    with pytest.raises(VaelabError, match="train_images: .*" + message):
        Dataset(
            torch.as_tensor(values), torch.zeros(2), torch.zeros(2, 16), torch.zeros(2),
            (4, 4), ("a",), "mine",
        )  # fmt: skip


def test_a_dataset_of_uint8_tensors_trains_as_intensities():
    pixels, labels = synthetic_images(128, seed=1)
    dataset = Dataset(
        torch.from_numpy(pixels), torch.from_numpy(labels), torch.from_numpy(pixels[:32]),
        torch.from_numpy(labels[:32]), (4, 4), ("top", "bottom"), "uint8 tensors",
    )  # fmt: skip
    assert dataset.train_images.dtype == torch.float32 and dataset.train_images.shape == (128, 16)
    assert float(dataset.train_images.tensor().max()) <= 1.0
    config = RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32))
    assert train(config, dataset, log=None).history[0].test_loss < 100


def test_as_unit_images_keeps_floats_in_range_as_they_are():
    values = torch.rand(3, 5, generator=torch.Generator().manual_seed(0))
    assert as_unit_images(values) is values


# ---------------------------------------------------------------- a run knows its data


def csv_run(work, monkeypatch):
    """A run trained from work/, with the CSV paths given relative to it."""
    work.mkdir()
    monkeypatch.chdir(work)
    for split, count, seed in (("train", 128, 1), ("test", 40, 2)):
        pixels, labels = synthetic_images(count, seed=seed)
        write_csv(work / f"{split}.csv", pixels.reshape(count, -1), labels)
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4)),
        data=DataConfig(train_csv="train.csv", test_csv="test.csv"),
        train=TrainConfig(epochs=1, batch_size=32, test_batch_size=40, precision="32"),
    )
    return train(config, run_dir=work / "run", log=None).run_dir


def test_config_json_names_the_data_by_absolute_path_and_fingerprint(tmp_path, monkeypatch):
    run_dir = csv_run(tmp_path / "a", monkeypatch)
    info = load_run_info(run_dir)
    assert info["data"]["train_csv"] == str(tmp_path / "a" / "train.csv")
    assert info["data"]["test_csv"] == str(tmp_path / "a" / "test.csv")
    assert len(info["dataset"]["test_sha256"]) == 64


def test_another_working_directory_reads_the_runs_own_data(tmp_path, monkeypatch, cli):
    run_dir = csv_run(tmp_path / "a", monkeypatch)
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    for split, count in (("train", 128), ("test", 40)):  # other images under the same names
        pixels, labels = synthetic_images(count, seed=9)
        write_csv(elsewhere / f"{split}.csv", pixels.reshape(count, -1), labels)
    monkeypatch.chdir(elsewhere)
    result = cli("evaluate", run_dir, "--iw-samples", 2)
    assert result.code == 0, result.err
    assert "on 40 test images" in result.out


def test_changed_data_is_refused_and_moved_data_can_be_named(tmp_path, monkeypatch, cli):
    run_dir = csv_run(tmp_path / "a", monkeypatch)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("train.csv", "test.csv"):
        shutil.copy(tmp_path / "a" / name, moved / name)
    pixels, labels = synthetic_images(40, seed=5)
    write_csv(tmp_path / "a" / "test.csv", pixels.reshape(40, -1), labels)  # changed in place
    result = cli("evaluate", run_dir, "--iw-samples", 2)
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert "are not those this run was tested on" in result.err
    assert "--data-dir, or --train-csv and --test-csv" in result.err
    assert not (run_dir / "eval.json").exists()
    moved_args = ("--train-csv", moved / "train.csv", "--test-csv", moved / "test.csv")
    assert cli("evaluate", run_dir, "--iw-samples", 2, *moved_args).code == 0
    assert cli("plot", run_dir, "--grid", 3, *moved_args).code == 0
    with pytest.raises(VaelabError, match="are not those this run was tested on"):
        open_run(run_dir)


def test_a_run_of_0_1_without_a_fingerprint_still_opens(tmp_path):
    dataset = make_tiny_dataset()
    config = RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=64))
    run_dir = train(config, dataset, run_dir=tmp_path / "r", log=None).run_dir
    raw = json.loads((run_dir / "config.json").read_text())
    del raw["dataset"]["test_sha256"]
    (run_dir / "config.json").write_text(json.dumps(raw))
    assert open_run(run_dir, dataset).dataset is dataset


# ---------------------------------------------------------------- sizes and seeds


def test_a_model_too_large_to_build_is_refused_before_any_memory_is_taken():
    assert parameter_count(ModelConfig()) < 1_000_000
    with pytest.raises(VaelabError, match=r"more than the 500,000,000 vaelab builds") as info:
        VAE(ModelConfig(hidden=(100_000_000,)))
    assert info.value.parameters == ("hidden", "latent_dim")
    with pytest.raises(VaelabError, match="weights"):
        VAE(ModelConfig(latent_dim=MAX_PARAMETERS))


def test_seeds_beyond_what_torch_takes_are_refused():
    for bad in (2**63, 2**64, -1):
        with pytest.raises(VaelabError, match=r"seed must be a whole number from 0 to 2\*\*63 - 1"):
            TrainConfig(seed=bad)


def test_the_explorer_takes_moved_csv_data_too(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from vaelab.explorer.app import create_app

    run_dir = csv_run(tmp_path / "a", monkeypatch)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved, ignore=shutil.ignore_patterns("run"))
    (tmp_path / "a" / "test.csv").unlink()
    data = DataConfig(train_csv=str(moved / "train.csv"), test_csv=str(moved / "test.csv"))
    points = TestClient(create_app(run_dir, data=data)).get("/api/points").json()
    assert len(points["x"]) == 40
    with pytest.raises(VaelabError, match="file not found"):
        create_app(run_dir)
