import json
import os
import subprocess
import sys

import pytest
from conftest import synthetic_images, write_csv

from vaelab.rundir import read_metrics


def run_vaelab(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


@pytest.fixture
def csv_pair(tmp_path):
    train_x, train_y = synthetic_images(300, side=4, seed=1)
    test_x, test_y = synthetic_images(100, side=4, seed=2)
    train = write_csv(tmp_path / "train.csv", train_x.reshape(300, -1), train_y)
    test = write_csv(tmp_path / "test.csv", test_x.reshape(100, -1), test_y)
    return train, test


def test_train_then_evaluate(tmp_path, csv_pair):
    train_csv, test_csv = csv_pair
    trained = run_vaelab(
        "train", "--epochs", "1", "--batch-size", "50", "--test-batch-size", "40",
        "--hidden", "8,4", "--train-csv", str(train_csv), "--test-csv", str(test_csv),
        "--name", "cli", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "epoch 01 - " in trained.stdout and "test_loss" in trained.stdout
    run_dir = tmp_path / "runs" / "cli"
    final = read_metrics(run_dir)[-1]["test_loss"]
    evaluated = run_vaelab("evaluate", str(run_dir), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.startswith(f"test_loss {final:.4f}")
    assert "negative ELBO" in evaluated.stdout
    assert json.loads((run_dir / "config.json").read_text())["model"]["input_dim"] == 16


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,a,b,c,d\n1,2,3,4,999\n")
    result = run_vaelab("train", "--train-csv", str(bad), "--test-csv", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"vaelab: error: {bad}: line 2, column 5 (pixel4): 999 is outside 0-255"
    ]
    assert not (tmp_path / "runs").exists()


def test_help_shows_every_option_with_its_default(tmp_path):
    result = run_vaelab("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for expected in (
        "--epochs",
        "[default: 60]",
        "--batch-size",
        "[default: 200]",
        "--lr",
        "[default: 0.001]",
        "--latent-dim",
        "--hidden",
        "--seed",
        "--device",
    ):
        assert expected in result.stdout


def test_existing_run_directory_is_refused(tmp_path, csv_pair):
    train_csv, test_csv = csv_pair
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "keep.txt").write_text("mine")
    result = run_vaelab(
        "train",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--train-csv",
        str(train_csv),
        "--test-csv",
        str(test_csv),
        "--name",
        "x",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "runs" / "x" / "keep.txt").read_text() == "mine"
    assert [p.name for p in (tmp_path / "runs" / "x").iterdir()] == ["keep.txt"]
