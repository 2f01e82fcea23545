"""Bad-input cases of sizes, counts and durations bounded before anything is allocated or started:
a run beyond the machine's memory, images to decode beyond it, and numbers past their declared
bounds (see tests/bad_input_cases.py, which gathers every group)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from tests.bad_input_cases import Case, saved_run, train_csv_args, untrained
from tests.cases_data import with_config_file
from vaelab.config import RunConfig

# 400 million weights pass the weight cap; 100,000 samples of z per image of a batch of 50 then
# need petabytes of activations, more than any machine has. (fp32: the same figures on every CPU)
HUGE = ("--hidden", "10000000", "--train-samples", "100000", "--precision", "32")
REFUSED = (
    r"^vaelab: error: training \([\d.]+ GiB for 400,[\d,]+ weights with their gradients and Adam's "
    r"moments, [\d.]+ TiB for a training step's activations, .*\) needs [\d.]+ TiB \([\d,]+ "
    r"bytes\) of memory, .* are available; choose a smaller --hidden, --batch-size, "
    r"--test-batch-size or --train-samples$"
)
TWO_63 = str(2**63)
TWO_62 = 2**62


def large_image_run(work: Path) -> Path:
    """runs/big: an untrained conv model of 3x1024x1024 images with one channel per layer (a
    few hundred thousand weights); 100,000 of its images take petabytes."""
    run = work / "runs" / "big"
    run.mkdir(parents=True)
    config = RunConfig.from_dict({
        "model": {"input_dim": 3 << 20, "image_shape": [3, 1024, 1024], "arch": "conv",
                  "hidden": [1, 1, 1]},
        "data": {"train_csv": "train.csv", "test_csv": "test.csv"},
    })  # fmt: skip
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    state = untrained(config.model).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, run / "model.safetensors")
    return run


def evaluate_args(*options: str):
    def build(work: Path) -> list[str]:
        saved_run(work)
        return ["evaluate", "runs/old", "--device", "cpu", *options]

    return build


def evaluate_args_config(model: dict[str, int]):
    """`vaelab evaluate runs/old` whose config.json's model section has `model` laid over it."""

    def build(work: Path) -> list[str]:
        run = saved_run(work)
        raw = json.loads((run / "config.json").read_text())
        raw["model"].update(model)
        (run / "config.json").write_text(json.dumps(raw))
        return ["evaluate", "runs/old", "--device", "cpu"]

    return build


def train_with(*options: str):
    return lambda w: train_csv_args(w, *options)


# fmt: off
CASES: list[Case] = [
    Case("memory", "hidden sizes and samples beyond the machine's memory",
         lambda w: train_csv_args(w, *HUGE), REFUSED, "--hidden"),
    Case("memory", "sample --n images beyond the machine's memory",
         lambda w: (large_image_run(w), [
             "sample", "runs/big", "--n", "100000", "--out", "s.npy"])[1],
         r"^vaelab: error: decoding 100,000 images of 3x1024x1024 \(12.0 MiB each\) needs [\d.]+ "
         r"TiB \([\d,]+ bytes\) of memory, .* are available; ask for fewer images with --n$",
         "--n"),
    # counts and durations past their bounds
    Case("bounds", "--epochs 10**12",
         train_with("--epochs", "1000000000000"),
         r"--epochs must be at most 1,000,000, got 1000000000000$", "--epochs"),
    Case("bounds", "--kl-warmup 2**63", train_with("--kl-warmup", TWO_63),
         rf"--kl-warmup must be a whole number of epochs, at least 0 and at most 1,000,000, got "
         rf"{TWO_63}$", "--kl-warmup"),
    Case("bounds", "--early-stopping 2**63", train_with("--early-stopping", TWO_63),
         rf"--early-stopping must be a whole number of epochs \(0: off\) up to 1,000,000, got "
         rf"{TWO_63}$", "--early-stopping"),
    Case("bounds", "--hidden 2**63", train_with("--hidden", TWO_63),
         r"each of --hidden and --latent-dim must be at most 2,147,483,647, got 9,223,372,036,854,"
         r"775,808$", "--hidden"),
    Case("bounds", "--latent-dim 2**63", train_with("--latent-dim", TWO_63),
         r"each of --hidden and --latent-dim must be at most 2,147,483,647", "--latent-dim"),
    Case("bounds", "--hidden of 101 layers", train_with("--hidden", ",".join(["4"] * 101)),
         r"--hidden must list at most 100 layer sizes, got 101$", "--hidden"),
    Case("bounds", "--checkpoint-every 2**63", train_with("--checkpoint-every", TWO_63),
         r"--checkpoint-every must be at most 1,000,000,000 steps \(leave it out to checkpoint "
         r"every epoch only\)", "--checkpoint-every"),
    Case("bounds", "--dist-timeout 2**63", train_with("--dist-timeout", TWO_63),
         r"'--dist-timeout': 9223372036854775808 is not in the range 1<=x<=86400",
         "--dist-timeout"),
    Case("bounds", "--tensorboard-images-every 2**63",
         train_with("--tensorboard-images-every", TWO_63),
         r"'--tensorboard-images-every': 9223372036854775808 is not in the range 0<=x<=1000000",
         "--tensorboard-images-every"),
    Case("bounds", "a config file's latent_dim of 2**62",
         with_config_file("c.json", json.dumps({"model": {"latent_dim": TWO_62}})),
         r"c\.json: model: each of hidden and latent_dim must be at most 2,147,483,647, got "
         r"4,611,686,018,427,387,904$", "c.json"),
    Case("bounds", "a config file's kl_warmup of 10**12",
         with_config_file("c.toml", "[train]\nkl_warmup = 1000000000000\n"),
         r"c\.toml: train\.kl_warmup must be a whole number of epochs, at least 0 and at most "
         r"1,000,000, got 1000000000000$", "c.toml"),
    Case("bounds", "a run's config.json declaring an input_dim of 2**62",
         evaluate_args_config({"input_dim": TWO_62}),
         r"input_dim must be at most 2,147,483,647 values per image", "runs/old/config.json"),
    Case("bounds", "evaluate --iw-samples 10**12",
         evaluate_args("--iw-samples", "1000000000000"),
         r"'--iw-samples': 1000000000000 is not in the range 1<=x<=1000000", "--iw-samples"),
    Case("bounds", "evaluate --time-budget nan", evaluate_args("--time-budget", "nan"),
         r"--time-budget must be a finite number of minutes, at least 0 \(0: no limit\), got nan$",
         "--time-budget"),
    Case("bounds", "evaluate --time-budget inf", evaluate_args("--time-budget", "inf"),
         r"--time-budget must be a finite number of minutes, at least 0 \(0: no limit\), got inf$",
         "--time-budget"),
    Case("bounds", "sweep --set epochs=10**12", lambda w: [
        "sweep", "--set", "epochs=1000000000000", "--runs-dir", "runs", "--name", "s"],
         r"epochs=1000000000000,seed=0: epochs must be at most 1,000,000", "epochs"),
]
# fmt: on
