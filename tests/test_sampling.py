"""`vaelab sample` and `vaelab evaluate` on a saved run, called in-process."""

import json

import numpy as np
import pytest
import torch
from conftest import synthetic_images, write_csv
from matplotlib.image import imread

from vaelab import rundir
from vaelab.cli import main
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


def vaelab(*args: str) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code)
    return 0


def test_sample_writes_npy_and_png(run_dir, tmp_path, capsys):
    assert vaelab("sample", run_dir, "--n", 10, "--out", tmp_path / "s.npy", "--seed", 3) == 0
    array = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert array.shape == (10, 4, 4) and array.dtype == np.float32
    expected = sample(rundir.load_model(run_dir), 10, seed=3).numpy().reshape(10, 4, 4)
    assert np.array_equal(array, expected) and array.min() > 0 and array.max() < 1
    assert vaelab("sample", run_dir, "--n", 10, "--out", tmp_path / "s.png") == 0
    png = imread(tmp_path / "s.png")
    assert png.shape[:2] == (3 * 5 - 1, 4 * 5 - 1)  # 4 per row, 3 rows, 1-pixel gaps
    assert "wrote" in capsys.readouterr().out


def test_sample_refuses_to_overwrite_and_odd_suffixes(run_dir, tmp_path, capsys):
    out = tmp_path / "s.png"
    out.write_bytes(b"mine")
    assert vaelab("sample", run_dir, "--out", out) == 2
    assert out.read_bytes() == b"mine"
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert vaelab("sample", run_dir, "--out", out, "--overwrite") == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert vaelab("sample", run_dir, "--out", tmp_path / "s.jpg") == 2
    assert vaelab("sample", run_dir, "--n", 0, "--out", tmp_path / "t.npy") == 2
    assert "must end in .png or .npy" in capsys.readouterr().err


def test_tile_layout():
    images = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    grid = tile(images, fill=-1.0)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    assert np.array_equal(grid[0:2, 4:7], images[1]) and np.array_equal(grid[3:5, 0:3], images[3])
    assert (grid[2] == -1).all() and (grid[3:5, 8:11] == -1).all()  # gaps and the empty cell


def test_evaluate_writes_eval_json_and_says_when_it_replaces_it(run_dir, capsys):
    args = ("evaluate", run_dir, "--iw-samples", 50, "--max-memory", "1MB", "--seed", 4)
    assert vaelab(*args) == 0
    out = capsys.readouterr().out
    assert "negative ELBO" in out and "IWAE -log p(x)" in out and "wrote" in out
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["likelihood"] == "continuous-bernoulli" and report["iw_samples"] == 50
    assert report["images"] == 64 and report["seed"] == 4
    assert report["negative_elbo_nats"] >= report["iwae_nll_nats"]
    assert vaelab(*args, "--images", 8) == 0
    assert "replaced" in capsys.readouterr().out
    assert json.loads((run_dir / "eval.json").read_text())["images"] == 8
    assert vaelab("evaluate", run_dir, "--max-memory", "lots") == 2
    assert "--max-memory 'lots'" in capsys.readouterr().err
    assert vaelab("evaluate", run_dir, "--images", 0) == 2


def test_sample_is_deterministic_and_uses_the_decoder_mean(run_dir):
    model = rundir.load_model(run_dir)
    assert torch.equal(sample(model, 6, seed=1), sample(model, 6, seed=1))
    assert not torch.equal(sample(model, 6, seed=1), sample(model, 6, seed=2))
