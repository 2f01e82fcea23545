"""Bad-input cases of the data's meaning: pixel ranges, seeds, sizes, paths, data that changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.bad_input_cases import Case, evaluate_spoiled, saved_run, train_csv_args, trained_run
from tests.helpers import write_csv

BIG = str(2**64)


def sample_of_saved_run(*options: str):
    def build(work: Path) -> list[str]:
        saved_run(work)
        return ["sample", "runs/old", "--out", "s.npy", *options]

    return build


def plot_of_saved_run(*options: str):
    def build(work: Path) -> list[str]:
        saved_run(work)
        return ["plot", "runs/old", *options]

    return build


def config_edited(change) -> object:
    def build(work: Path) -> list[str]:
        run = saved_run(work)
        raw = json.loads((run / "config.json").read_text())
        change(raw)
        (run / "config.json").write_text(json.dumps(raw))
        return ["evaluate", "runs/old", "--device", "cpu"]

    return build


def evaluate_with_seed(seed: str):
    def build(work: Path) -> list[str]:
        saved_run(work)
        return ["evaluate", "runs/old", "--device", "cpu", "--seed", seed]

    return build


def replace_test_csv(work: Path) -> list[str]:
    """The run's test CSV replaced by other images after training."""
    run = trained_run(work)
    pixels = np.random.default_rng(4).integers(0, 256, size=(100, 16))
    write_csv(work / "test.csv", pixels.astype(np.uint8), np.zeros(100, dtype=np.uint8))
    return ["evaluate", str(run.relative_to(work)), "--iw-samples", "2"]


CASES: list[Case] = [
    Case("data", "--seed 2**64", lambda w: train_csv_args(w, "--seed", BIG),
         r"--seed must be a whole number from 0 to 2\*\*63 - 1", "--seed"),
    Case("data", "sample --seed 2**64", sample_of_saved_run("--seed", BIG),
         r"--seed must be a whole number from 0 to 2\*\*63 - 1", "--seed"),
    Case("data", "evaluate --seed 2**64", evaluate_with_seed(BIG),
         r"--seed must be a whole number from 0 to 2\*\*63 - 1", "--seed"),
    Case("data", "an IWAE evaluation beyond its time budget",
         lambda w: [*evaluate_with_seed("0")(w), "--time-budget", "1e-9"],
         r"^vaelab: error: IWAE k=5000 on 100 images: (?:about .*|under 10 s) \(measured on 4 "
         r"images\), beyond the 1e-09-minute budget; evaluate fewer images with --images or "
         r"fewer importance samples with --iw-samples, or allow the time with --time-budget "
         r"\(0: no limit\)$",
         "--time-budget"),
    Case("data", "--hidden 100000000", lambda w: train_csv_args(w, "--hidden", "100000000"),
         r"more than the 500,000,000 vaelab builds; choose a smaller --hidden or --latent-dim",
         "--hidden"),
    Case("data", "--latent-dim 1000000000",
         lambda w: train_csv_args(w, "--latent-dim", "1000000000"),
         "more than the 500,000,000 vaelab builds", "--latent-dim"),
    Case("data", "plot --span 1e308", plot_of_saved_run("--span", "1e308"),
         "--span must be a number above 0 and at most 1000", "--span"),
    Case("data", "config.json with hidden []",
         config_edited(lambda raw: raw["model"].update(hidden=[])),
         "hidden must list at least one positive layer size", "runs/old/config.json"),
    Case("data", "config.json with a NUL in a path",
         config_edited(lambda raw: raw["data"].update(train_csv="a\u0000b")),
         "train_csv is not a usable path", "runs/old/config.json"),
    Case("data", "test data changed since training", replace_test_csv,
         "are not those this run was tested on; point vaelab at the files it was trained on "
         "with --data .and --test-data., --data-dir",
         "runs/r"),
]  # fmt: skip


def config_text(text: str):
    def build(work: Path) -> list[str]:
        run = saved_run(work)
        (run / "config.json").write_text(text)
        return ["evaluate", "runs/old", "--device", "cpu"]

    return build


def metrics_text(text: str):
    def build(work: Path) -> list[str]:
        run = trained_run(work)
        (run / "metrics.csv").write_text(text)
        return ["report", str(run.relative_to(work))]

    return build


HEADER = "epoch,seconds,train_loss,train_reconstruction,train_kld,test_loss,test_reconstruction,"
HEADER += "test_kld\n"

CASES += [
    Case("data", "config.json with a 5000-digit number",
         config_text('{"model": {"latent_dim": ' + "9" * 5000 + "}}"),
         r"runs/old/config.json: not valid JSON \(Exceeds the limit", "runs/old/config.json"),
    Case("data", "config.json nested 100,000 deep",
         config_text('{"model": ' + "[" * 100_000 + "]" * 100_000 + "}"),
         "runs/old/config.json: JSON nested too deeply", "runs/old/config.json"),
    Case("data", "metrics.csv with only its header", metrics_text(HEADER),
         "metrics.csv: no epochs recorded", "runs/r/metrics.csv"),
    Case("data", "metrics.csv without a column", metrics_text("epoch,seconds\n1,2.0\n"),
         "metrics.csv: line 2 lacks train_loss", "runs/r/metrics.csv"),
    Case("data", "metrics.csv of NaN", metrics_text(HEADER + ",".join(["nan"] * 8) + "\n"),
         "metrics.csv: line 2 holds a value that is not finite", "runs/r/metrics.csv"),
]  # fmt: skip


def float8_weights(run: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = run / "model.safetensors"
    tensors = {k: v.to(torch.float8_e4m3fn) for k, v in load_file(path).items()}
    save_file(tensors, path)


CASES += [
    Case("data", "weights stored as float8", evaluate_spoiled(float8_weights),
         "has dtype torch.float8_e4m3fn, the model expects torch.float32",
         "runs/old/model.safetensors"),
]  # fmt: skip


def with_config_file(name: str, text: str, *options: str):
    def build(work: Path) -> list[str]:
        (work / name).write_text(text)
        return train_csv_args(work, "--config", name, *options)

    return build


# fmt: off
CASES += [
    Case("config file", "an unknown section",
         with_config_file("c.yaml", "modle:\n  latent_dim: 3\n"),
         "c.yaml: unknown section.s. modle; a config file has model, data, train", "c.yaml"),
    Case("config file", "an unknown field", with_config_file("c.toml", "[train]\nepoch = 3\n"),
         r"c.toml: unknown field\(s\) in train: epoch \(did you mean train.epochs\?\)", "c.toml"),
    Case("config file", "a value of the wrong type",
         with_config_file("c.json", '{"model": {"latent_dim": "two"}}'),
         "c.json: model.latent_dim must be an integer, got 'two'", "c.json"),
    Case("config file", "YAML that is not valid", with_config_file("c.yaml", "model: [1, 2\n"),
         "c.yaml: line 2: not valid YAML", "c.yaml"),
    Case("config file", "YAML asking to build a Python object",
         with_config_file("c.yaml", "model: !!python/object/apply:os.system ['touch PWNED']\n"),
         "c.yaml: line 1: not valid YAML .could not determine a constructor", "c.yaml"),
    Case("config file", "TOML that is not valid", with_config_file("c.toml", "[train\n"),
         "c.toml: not valid TOML", "c.toml"),
    Case("config file", "another suffix", with_config_file("c.ini", "[train]\n"),
         "c.ini: a config file must end in .json, .yaml, .yml or .toml", "c.ini"),
    Case("config file", "a list instead of sections", with_config_file("c.json", "[1, 2]"),
         "c.json: a config file holds a mapping of sections", "c.json"),
    Case("config file", "a missing file", lambda w: train_csv_args(w, "--config", "none.yaml"),
         "none.yaml: file not found", "none.yaml"),
    Case("config file", "--config with --from", lambda w: (saved_run(w), train_csv_args(
        w, "--config", "c.yaml", "--from", "runs/old"))[1], "give --config or --from, not both",
         "--config"),
    Case("config file", "--from a run that does not exist",
         lambda w: train_csv_args(w, "--from", "runs/none"), "runs/none: run directory not found",
         "runs/none"),
]
# fmt: on
