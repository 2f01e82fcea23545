"""Config files (JSON, YAML, TOML), options laid over them, and re-running an earlier run."""

from __future__ import annotations

import json

import pytest

from tests.bad_input_cases import csv_pair
from vaelab import rundir
from vaelab.config import RunConfig
from vaelab.config_files import load_config_file

YAML = """
model:
  latent_dim: 3
  hidden: [16, 8]
data:
  val_split: 0.2
train:
  epochs: 2
  lr: 0.002
  lr_schedule: constant
"""
TOML = """
[model]
latent_dim = 3
hidden = [16, 8]

[data]
val_split = 0.2

[train]
epochs = 2
lr = 0.002
lr_schedule = "constant"
"""
JSON = json.dumps(
    {
        "model": {"latent_dim": 3, "hidden": [16, 8]},
        "data": {"val_split": 0.2},
        "train": {"epochs": 2, "lr": 0.002, "lr_schedule": "constant"},
    }
)


def test_json_yaml_and_toml_give_the_same_config(tmp_path):
    configs = []
    for name, text in (("c.yaml", YAML), ("c.toml", TOML), ("c.json", JSON)):
        (tmp_path / name).write_text(text)
        configs.append(load_config_file(tmp_path / name))
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].model.latent_dim == 3 and configs[0].data.val_split == 0.2
    assert configs[0].train.batch_size == RunConfig().train.batch_size  # the rest: defaults


def test_a_runs_config_json_is_a_config_file(tmp_path, tiny_dataset):
    from vaelab.config import ModelConfig, TrainConfig
    from vaelab.training import train

    config = RunConfig(model=ModelConfig(hidden=(8, 4)), train=TrainConfig(epochs=1, batch_size=32))
    train(config, tiny_dataset, run_dir=tmp_path / "r", log=None)
    again = load_config_file(tmp_path / "r" / "config.json")
    assert again == rundir.load_config(tmp_path / "r")


def test_options_on_the_command_line_override_the_file(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(YAML)
    printed = cli("train", "--config", "c.yaml", "--epochs", 5, "--beta", 2, "--print-config")
    assert printed.code == 0, printed.err
    config = RunConfig.from_dict(json.loads(printed.out))
    assert (config.train.epochs, config.train.beta, config.train.lr) == (5, 2.0, 0.002)
    assert config.model.hidden == (16, 8) and config.data.val_split == 0.2
    assert not (tmp_path / "runs").exists()  # --print-config trains nothing


def test_from_reruns_a_run_with_another_seed(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    train_csv, test_csv = csv_pair(tmp_path)
    options = ["--epochs", 1, "--batch-size", 50, "--hidden", "8,4", "--lr", 0.003]
    data = ["--train-csv", train_csv, "--test-csv", test_csv]
    first = cli("train", *options, *data, "--name", "a", "--no-plots")
    assert first.code == 0, first.err
    again = cli("train", "--from", "runs/a", "--seed", 7, "--name", "b", "--no-plots")
    assert again.code == 0, again.err
    a, b = rundir.load_config(tmp_path / "runs" / "a"), rundir.load_config(tmp_path / "runs" / "b")
    assert b.train.seed == 7 and b.train.lr == 0.003 and b.model.hidden == (8, 4)
    assert b.data == a.data


def test_resume_refuses_a_config_file(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(YAML)
    refused = cli("train", "--resume", "runs/x", "--config", "c.yaml")
    assert refused.code == 2 and "drop --config" in refused.err


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_an_empty_section_means_the_defaults(tmp_path, suffix):
    text = {".yaml": "model: {}\n", ".toml": "[model]\n", ".json": '{"model": {}}'}[suffix]
    (tmp_path / f"c{suffix}").write_text(text)
    assert load_config_file(tmp_path / f"c{suffix}") == RunConfig()
