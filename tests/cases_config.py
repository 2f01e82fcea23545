"""Bad-input cases of config files, a run's config.json as a config, and numbers that read two
ways (see tests/bad_input_cases.py, which gathers every group)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bad_input_cases import SMALL, Case, csv_pair, saved_run, train_csv_args
from tests.cases_data import with_config_file

NESTED = 100_000


def config_beside(work: Path) -> list[str]:
    """conf/c.toml names train.csv, which is in the working directory, not beside the file."""
    csv_pair(work)
    (work / "conf").mkdir()
    (work / "conf" / "c.toml").write_text('[data]\nsource = "train.csv"\n')
    return ["train", *SMALL, "--config", "conf/c.toml", "--runs-dir", "runs", "--name", "r"]


def run_config_without(*sections: str):
    """runs/old/config.json with `sections` removed, given to --from."""

    def build(work: Path) -> list[str]:
        run = saved_run(work)
        raw = json.loads((run / "config.json").read_text())
        for name in sections:
            del raw[name]
        (run / "config.json").write_text(json.dumps(raw))
        return train_csv_args(work, "--from", "runs/old")

    return build


def recorded_config_without_data(work: Path) -> list[str]:
    """A run's config.json (it records versions) that lacks its data section, as --config."""
    (work / "config.json").write_text(
        json.dumps({"model": {"latent_dim": 3}, "train": {}, "versions": {"vaelab": "0.4"}})
    )
    return train_csv_args(work, "--config", "config.json")


# fmt: off
CASES: list[Case] = [
    Case("config file", "a YAML section left empty (null)",
         with_config_file("c.yaml", "model:\ntrain:\n  epochs: 2\n"),
         r"^vaelab: error: c\.yaml: model: an empty section \(null\); give its fields, or \{\} "
         r"for the defaults$", "c.yaml"),
    Case("config file", "a section that is a list",
         with_config_file("c.yaml", "data: [1, 2]\n"),
         r"c\.yaml: data must be a mapping of fields, got \[1, 2\]$", "c.yaml"),
    Case("config file", "a TOML section that is an array of tables",
         with_config_file("c.toml", "[[train]]\nepochs = 2\n"),
         r"c\.toml: train must be a mapping of fields, got \[\{", "c.toml"),
    Case("config file", "a list section with an option laid over it",
         with_config_file("c.json", '{"model": [1]}', "--latent-dim", "3"),
         r"c\.json: model must be a mapping of fields, got \[1\]$", "c.json"),
    Case("config file", f"TOML nested {NESTED:,} deep",
         with_config_file("c.toml", "[model]\nhidden = " + "[" * NESTED + "]" * NESTED + "\n"),
         r"^vaelab: error: c\.toml: (TOML nested too deeply|not valid TOML)", "c.toml"),
    Case("config file", f"YAML nested {NESTED:,} deep",
         with_config_file("c.yaml", "model: " + "[" * NESTED + "]" * NESTED + "\n"),
         r"^vaelab: error: c\.yaml: YAML nested too deeply$", "c.yaml"),
    Case("config file", "JSON nested deeply inside a field",
         with_config_file("c.json", '{"model": {"latent_dim": ' + "[" * 500 + "]" * 500 + "}}"),
         r"c\.json: model\.latent_dim must be an integer, got \[\[\[\.\.\.\]\]\]$", "c.json"),
    Case("config file", "a list field given a mapping",
         with_config_file("c.yaml", "data:\n  class_names: {a: 1}\n"),
         r"c\.yaml: data\.class_names must be a list, got \{'a': 1\}$", "c.yaml"),
    Case("config file", "keys that are not strings",
         with_config_file("c.yaml", "model:\n  1: 2\n  latent: 3\n"),
         r"c\.yaml: unknown field\(s\) in model: 1, latent \(did you mean model\.latent_dim\?\)$",
         "c.yaml"),
    Case("config file", "a section named by a number",
         with_config_file("c.yaml", "model: {}\n7: {}\n"),
         r"c\.yaml: unknown section\(s\) 7; a config file has model, data, train$", "c.yaml"),
    Case("config file", "a learning rate of 400 digits",
         with_config_file("c.yaml", "train:\n  lr: 1" + "0" * 400 + "\n"),
         r"c\.yaml: train\.lr must be a number, got 10000", "c.yaml"),
    Case("config file", "an integer of 5,000 digits in YAML",
         with_config_file("c.yaml", "train:\n  epochs: 1" + "0" * 5000 + "\n"),
         r"c\.yaml: not valid YAML \(Exceeds the limit", "c.yaml"),
    Case("config file", "a date that does not exist",
         with_config_file("c.yaml", "train:\n  epochs: 2021-13-45\n"),
         r"c\.yaml: not valid YAML \(month must be in 1\.\.12\)$", "c.yaml"),
    Case("config file", "a value the config refuses names its section",
         with_config_file("c.toml", "[model]\nlatent_dim = 0\n"),
         r"c\.toml: model\.latent_dim must be at least 1, got 0$", "c.toml"),
    Case("config file", "a relative source resolved against the file's folder", config_beside,
         r"conf/train\.csv: not found", "conf/train.csv"),
    Case("config file", "test_split 1.0 in a file",
         with_config_file("c.toml", "[data]\ntest_split = 1.0\n"),
         r"c\.toml: data\.test_split 1\.0 could mean all the images \(100%\) or 1 image: write 1 "
         r"for one image, or a fraction below 1", "c.toml"),
    Case("config file", "--from a run whose config.json lacks sections",
         run_config_without("data", "train"),
         r"runs/old/config\.json: lacks its data and train section\(s\); a run's config\.json "
         r"records model, data, train$", "runs/old/config.json"),
    Case("config file", "a run's config.json without its data section as --config",
         recorded_config_without_data,
         r"config\.json: lacks its data section\(s\); a run's config\.json records", "config.json"),
    Case("config file", "a JSON key given twice",
         with_config_file("c.json", '{"train": {"epochs": 1, "epochs": 5}}'),
         r"^vaelab: error: c\.json: not valid JSON \(the key 'epochs' is given twice in one "
         r"object\); give each key once$", "c.json"),
    Case("config file", "a YAML key given twice",
         with_config_file("c.yaml", "train:\n  epochs: 1\n  epochs: 5\n"),
         r"^vaelab: error: c\.yaml: line 3: not valid YAML \(the key 'epochs' is given twice in "
         r"one mapping; give each key once\)$", "c.yaml"),
    Case("config file", "a YAML section given twice",
         with_config_file("c.yaml", "train:\n  epochs: 1\nmodel: {}\ntrain:\n  lr: 0.1\n"),
         r"c\.yaml: line 4: not valid YAML \(the key 'train' is given twice", "c.yaml"),
    Case("splits", "--test-split 1.0", lambda w: train_csv_args(w, "--test-split", "1.0"),
         r"^vaelab: error: --test-split 1\.0 could mean all the images \(100%\) or 1 image: write "
         r"1 for one image, or a fraction below 1 for a share of them \(0\.2 for 20%\)$",
         "--test-split"),
    Case("splits", "--val-split 1.0", lambda w: train_csv_args(w, "--val-split", "1.0"),
         r"--val-split 1\.0 could mean all the images \(100%\) or 1 image", "--val-split"),
]
# fmt: on
