"""`vaelab sample` and `vaelab evaluate` on a saved run, called in-process."""

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from tests.helpers import synthetic_images, write_csv
from vaelab import rundir
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.latent import sample
from vaelab.training import train
from vaelab.viz.images import tile


@pytest.fixture
def run_dir(tmp_path):
    """A run trained on 4x4 images from CSV files, so that `evaluate` finds its test set again."""
    csv = {}
    for split, count, seed in (("train", 128, 1), ("test", 64, 2)):
        pixels, labels = synthetic_images(count, seed=seed)
        csv[split] = str(write_csv(tmp_path / f"{split}.csv", pixels.reshape(count, -1), labels))
    config = RunConfig(
        model=ModelConfig(hidden=(8, 4), likelihood="continuous-bernoulli"),
        data=DataConfig(train_csv=csv["train"], test_csv=csv["test"]),
        train=TrainConfig(epochs=1, batch_size=64, test_batch_size=64, precision="32"),
    )
    train(config, run_dir=tmp_path / "run", log=None)
    return tmp_path / "run"


def test_sample_writes_npy_and_png(run_dir, tmp_path, cli):
    assert cli("sample", run_dir, "--n", 10, "--out", tmp_path / "s.npy", "--seed", 3).code == 0
    array = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert array.shape == (10, 4, 4) and array.dtype == np.float32
    expected = sample(rundir.load_model(run_dir), 10, seed=3).numpy().reshape(10, 4, 4)
    assert np.array_equal(array, expected) and array.min() > 0 and array.max() < 1
    drawn = cli("sample", run_dir, "--n", 10, "--out", tmp_path / "s.png")
    assert drawn.code == 0
    png = imread(tmp_path / "s.png")
    assert png.shape[:2] == (3 * 5 - 1, 4 * 5 - 1)  # 4 per row, 3 rows, 1-pixel gaps
    assert "wrote" in drawn.out


def test_sample_refuses_to_overwrite_and_odd_suffixes_and_no_images(run_dir, tmp_path, cli):
    out = tmp_path / "s.png"
    assert cli("sample", run_dir, "--out", out).code == 0
    first = out.read_bytes()
    refused = cli("sample", run_dir, "--out", out, "--seed", 1)
    assert refused.code == 2 and "already exists; pass --overwrite" in refused.err
    assert out.read_bytes() == first
    assert cli("sample", run_dir, "--out", out, "--seed", 1, "--overwrite").code == 0
    assert out.read_bytes().startswith(b"\x89PNG") and out.read_bytes() != first
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"mine")
    kept = cli("sample", run_dir, "--out", mine, "--overwrite")
    assert kept.code == 2 and "is not a samples file vaelab wrote" in kept.err
    assert mine.read_bytes() == b"mine"
    jpeg = cli("sample", run_dir, "--out", tmp_path / "s.jpg")
    assert jpeg.code == 2 and "must end in .png or .npy" in jpeg.err
    none = cli("sample", run_dir, "--n", 0, "--out", tmp_path / "t.npy")
    assert none.code == 2 and "--n" in none.err and "got 0" in none.err
    assert not (tmp_path / "s.jpg").exists() and not (tmp_path / "t.npy").exists()


def test_tile_lays_images_out_in_rows_with_gaps_and_fills_the_empty_cell():
    images = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    grid = tile(images, fill=-1.0)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    assert np.array_equal(grid[0:2, 4:7], images[1]) and np.array_equal(grid[3:5, 0:3], images[3])
    assert (grid[2] == -1).all() and (grid[3:5, 8:11] == -1).all()  # gaps and the empty cell


def test_evaluate_writes_eval_json_and_says_when_it_replaces_it(run_dir, cli):
    args = ("evaluate", run_dir, "--iw-samples", 50, "--max-memory", "1MB", "--seed", 4)
    first = cli(*args)
    assert first.code == 0, first.err
    out = first.out
    assert "negative ELBO" in out and "IWAE -log p(x)" in out and "wrote" in out
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["likelihood"] == "continuous-bernoulli" and report["iw_samples"] == 50
    assert report["images"] == 64 and report["seed"] == 4
    assert report["negative_elbo_nats"] >= report["iwae_nll_nats"]
    again = cli(*args, "--images", 8)
    assert again.code == 0 and "replaced" in again.out
    assert json.loads((run_dir / "eval.json").read_text())["images"] == 8
    lots = cli("evaluate", run_dir, "--max-memory", "lots")
    assert lots.code == 2 and "--max-memory 'lots'" in lots.err
    assert cli("evaluate", run_dir, "--images", 0).code == 2


def test_sample_is_the_same_for_a_seed_and_differs_between_seeds(run_dir):
    model = rundir.load_model(run_dir)
    assert torch.equal(sample(model, 6, seed=1), sample(model, 6, seed=1))
    assert not torch.equal(sample(model, 6, seed=1), sample(model, 6, seed=2))
