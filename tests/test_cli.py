"""The command line end to end: train, evaluate and --help in-process; one real process."""

import json

import pytest

from tests.helpers import run_vaelab, synthetic_images, write_csv
from vaelab.rundir import read_metrics


@pytest.fixture
def csv_pair(tmp_path):
    train_x, train_y = synthetic_images(300, side=4, seed=1)
    test_x, test_y = synthetic_images(100, side=4, seed=2)
    train = write_csv(tmp_path / "train.csv", train_x.reshape(300, -1), train_y)
    test = write_csv(tmp_path / "test.csv", test_x.reshape(100, -1), test_y)
    return train, test


def test_evaluate_reports_the_test_loss_that_train_ended_with(tmp_path, csv_pair, cli):
    train_csv, test_csv = csv_pair
    trained = cli(
        "train", "--epochs", 1, "--batch-size", 50, "--test-batch-size", 40, "--hidden", "8,4",
        "--train-csv", train_csv, "--test-csv", test_csv, "--runs-dir", tmp_path / "runs",
        "--name", "cli",
    )  # fmt: skip
    assert trained.code == 0, trained.err
    assert "epoch 01 - " in trained.out and "test_loss" in trained.out
    run_dir = tmp_path / "runs" / "cli"
    final = read_metrics(run_dir)[-1]["test_loss"]
    evaluated = cli("evaluate", run_dir)
    assert evaluated.code == 0, evaluated.err
    assert evaluated.out.startswith(f"test_loss {final:.4f}")
    assert "negative ELBO" in evaluated.out
    assert json.loads((run_dir / "config.json").read_text())["model"]["input_dim"] == 16


@pytest.mark.slow
def test_bad_csv_in_a_real_process_is_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,a,b,c,d\n1,2,3,4,999\n")
    result = run_vaelab("train", "--train-csv", bad, "--test-csv", bad, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"vaelab: error: {bad}: line 2, column 5 (pixel4): 999 is outside 0-255"
    ]
    assert not (tmp_path / "runs").exists()


def test_train_help_lists_the_options_with_their_defaults(cli):
    result = cli("train", "--help")
    assert result.code == 0
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
        assert expected in result.out


def test_existing_run_directory_is_refused_and_left_as_it_was(tmp_path, csv_pair, cli):
    train_csv, test_csv = csv_pair
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "keep.txt").write_text("mine")
    result = cli(
        "train", "--epochs", 1, "--batch-size", 50, "--train-csv", train_csv,
        "--test-csv", test_csv, "--runs-dir", tmp_path / "runs", "--name", "x",
    )  # fmt: skip
    assert result.code == 2 and "already exists" in result.err
    assert (tmp_path / "runs" / "x" / "keep.txt").read_text() == "mine"
    assert [p.name for p in (tmp_path / "runs" / "x").iterdir()] == ["keep.txt"]
