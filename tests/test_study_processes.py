"""A small study as a user would run it, each command a process of its own: runs from a config
file, the run list, the compare page, a run trained further, and an ONNX export."""

from __future__ import annotations

import json

import pytest

from tests.bad_input_cases import csv_pair
from tests.helpers import run_vaelab
from vaelab import rundir


@pytest.mark.slow
def test_a_study_from_config_file_to_export(tmp_path):
    train_csv, test_csv = csv_pair(tmp_path)
    (tmp_path / "study.toml").write_text(
        f'[model]\nhidden = [8, 4]\n\n[data]\ntrain_csv = "{train_csv}"\ntest_csv = "{test_csv}"\n'
        '\n[train]\nepochs = 1\nbatch_size = 50\nlr_schedule = "constant"\ndevice = "cpu"\n'
    )

    def vaelab(*args):
        result = run_vaelab(*args, cwd=tmp_path, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    vaelab("train", "--config", "study.toml", "--name", "a", "--no-plots")
    vaelab("train", "--config", "study.toml", "--latent-dim", "3", "--name", "b", "--no-plots")
    assert rundir.load_config(tmp_path / "runs" / "b").model.latent_dim == 3
    listed = vaelab("runs")
    assert [line.split()[0] for line in listed.splitlines()[1:]] == ["a", "b"]
    assert all("finished" in line for line in listed.splitlines()[1:])
    compared = vaelab("compare", "runs/a", "runs/b", "--out", "compare.html")
    assert "latent_dim" in (tmp_path / "compare.html").read_text() and "a" in compared
    vaelab("train", "--resume", "runs/a", "--epochs", "2", "--no-plots")
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path / "runs" / "a")] == [1, 2]
    exported = vaelab("export", "runs/a", "--format", "onnx", "--out", "onnx")
    assert "max abs difference" in exported or "difference" in exported
    record = json.loads(next((tmp_path / "onnx").glob("export-*.json")).read_text())
    assert record["weights_sha256"] == rundir.weights_sha256(tmp_path / "runs" / "a")
