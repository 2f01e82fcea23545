"""Every bad input vaelab must refuse, as a catalogue shared by the tests and docs/errors.md.

Each case builds its files in a fresh working directory and returns the command-line arguments
(relative paths, so the messages read as a user would see them). `expect` is a regex the one-line
message must match; `names` is the file or option the message must name.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tests.helpers import synthetic_images, write_csv, write_idx
from vaelab.config import ModelConfig, RunConfig
from vaelab.models import VAE

RUN = ["--runs-dir", "runs", "--name", "r"]
SMALL = ["--epochs", "1", "--batch-size", "50", "--test-batch-size", "50", "--hidden", "8,4"]


@dataclass(frozen=True)
class Case:
    group: str
    what: str
    build: Callable[[Path], list[str]]
    expect: str
    names: str = ""


# ---------------------------------------------------------------- builders


def csv_pair(work: Path, side: int = 4, n_train: int = 300) -> tuple[str, str]:
    train_x, train_y = synthetic_images(n_train, side=side, seed=1)
    test_x, test_y = synthetic_images(100, side=side, seed=2)
    write_csv(work / "train.csv", train_x.reshape(n_train, -1), train_y)
    write_csv(work / "test.csv", test_x.reshape(100, -1), test_y)
    return "train.csv", "test.csv"


def train_csv_args(work: Path, *options: str, side: int = 4) -> list[str]:
    train, test = csv_pair(work, side=side)
    return ["train", *SMALL, *options, "--train-csv", train, "--test-csv", test, *RUN]


def with_bad_train_csv(content: str | bytes) -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        _, test = csv_pair(work, side=2)  # the bad file's header has 4 pixels
        bad = work / "bad.csv"
        bad.write_bytes(content.encode() if isinstance(content, str) else content)
        return ["train", *SMALL, "--train-csv", "bad.csv", "--test-csv", test, *RUN]

    return build


IDX_STEMS = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_dir(work: Path, side: int = 4, test_side: int | None = None) -> Path:
    """data/ holding four valid gzip IDX files of tiny synthetic images."""
    directory = work / "data"
    directory.mkdir(exist_ok=True)
    train_x, train_y = synthetic_images(300, side=side, seed=1)
    test_x, test_y = synthetic_images(100, side=test_side or side, seed=2)
    write_idx(directory / IDX_STEMS["train-images"], train_x, compress=True)
    write_idx(directory / IDX_STEMS["train-labels"], train_y, compress=True)
    write_idx(directory / IDX_STEMS["test-images"], test_x, compress=True)
    write_idx(directory / IDX_STEMS["test-labels"], test_y, compress=True)
    return directory


def train_idx_args() -> list[str]:
    return ["train", *SMALL, "--data-dir", "data", *RUN]


def with_idx(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A data directory where `change` spoils one thing."""

    def build(work: Path) -> list[str]:
        change(idx_dir(work))
        return train_idx_args()

    return build


def replace_file(name: str, payload: bytes) -> Callable[[Path], None]:
    def change(directory: Path) -> None:
        (directory / IDX_STEMS[name]).write_bytes(payload)

    return change


def raw_idx(dtype_code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, dtype_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


def truncate_gzip(directory: Path) -> None:
    path = directory / IDX_STEMS["train-images"]
    path.write_bytes(path.read_bytes()[:-30])


def corrupt_gzip(directory: Path) -> None:
    path = directory / IDX_STEMS["train-images"]
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def untrained(config: ModelConfig) -> VAE:
    """A model with the initial weights of seed 0, the same on every run."""
    torch.manual_seed(0)
    return VAE(config)


def saved_run(work: Path, input_dim: int = 16, hidden: tuple[int, ...] = (8, 4)) -> Path:
    """runs/old: a run directory (config.json + weights) for a model on the CSV pair."""
    train, test = csv_pair(work)
    run = work / "runs" / "old"
    run.mkdir(parents=True)
    config = RunConfig.from_dict(
        {
            "model": {"input_dim": input_dim, "hidden": list(hidden), "latent_dim": 2},
            "data": {"train_csv": train, "test_csv": test},
            "train": {"epochs": 1, "batch_size": 50, "test_batch_size": 50},
        }
    )
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    model = untrained(config.model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run / "model.safetensors")
    return run


def evaluate_spoiled(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        change(saved_run(work))
        return ["evaluate", "runs/old", "--device", "cpu"]

    return build


def truncate_weights(run: Path) -> None:
    path = run / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def other_architecture(run: Path) -> None:
    other = untrained(ModelConfig(input_dim=16, hidden=(8, 4), latent_dim=3))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, run / "model.safetensors")


def torch_save_renamed(run: Path) -> None:
    torch.save(
        untrained(ModelConfig(input_dim=16, hidden=(8, 4))).state_dict(), run / "model.safetensors"
    )


class _Bomb:
    """Unpickling this creates the file PWNED: proof that a reader ran code."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def pickle_bomb(run: Path) -> None:
    (run / "model.safetensors").write_bytes(pickle.dumps({"w": _Bomb()}))


def nan_weights(run: Path) -> None:
    model = untrained(ModelConfig(input_dim=16, hidden=(8, 4)))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["mu_head.weight"][0, 0] = float("nan")
    save_file(state, run / "model.safetensors")


def evaluate_on_other_image_size(work: Path) -> list[str]:
    saved_run(work)
    idx_dir(work, side=5)
    return ["evaluate", "runs/old", "--data-dir", "data", "--device", "cpu"]


def existing_run(work: Path) -> list[str]:
    (work / "runs" / "r").mkdir(parents=True)
    (work / "runs" / "r" / "keep.txt").write_text("mine")
    return train_csv_args(work)


def run_dir_is_a_file(work: Path) -> list[str]:
    (work / "runs").mkdir()
    (work / "runs" / "r").write_text("a file")
    return train_csv_args(work)


def runs_dir_under_a_file(work: Path) -> list[str]:
    (work / "blocker").write_text("a file")
    args = train_csv_args(work)
    args[args.index("runs")] = "blocker/runs"
    return args


def trained_run(work: Path) -> Path:
    """runs/r: a real run (2 epochs on the CSV pair) with its training checkpoint."""
    from vaelab.data import load_dataset
    from vaelab.training import train

    train_csv, test_csv = csv_pair(work)
    config = RunConfig.from_dict(
        {
            "model": {"hidden": [8, 4]},
            "data": {"train_csv": str(work / train_csv), "test_csv": str(work / test_csv)},
            "train": {"epochs": 2, "batch_size": 50, "test_batch_size": 50, "device": "cpu"},
        }
    )
    train(config, load_dataset(config.data), run_dir=work / "runs" / "r", log=None)
    return work / "runs" / "r"


def resume_spoiled(change: Callable[[Path], None], *options: str) -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        change(trained_run(work))
        return ["train", "--resume", "runs/r", *options, "--no-plots"]

    return build


def spoil_checkpoint(payload: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "checkpoint.safetensors"
        path.write_bytes(payload(path.read_bytes()))

    return change


def edit_config(run: Path) -> None:
    raw = json.loads((run / "config.json").read_text())
    raw["train"]["lr"] = 0.01
    (run / "config.json").write_text(json.dumps(raw))


def edit_training_data(run: Path) -> None:
    path = run.parent.parent / "train.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",7"
    path.write_text("\n".join(lines) + "\n")


def torch_save_checkpoint(run: Path) -> None:
    torch.save({"epoch": 1}, run / "checkpoint.safetensors")


def without_checkpoint(work: Path) -> list[str]:
    saved_run(work)
    return ["train", "--resume", "runs/old", "--no-plots"]


# ---------------------------------------------------------------- the catalogue

HEADER_4 = "label,p1,p2,p3,p4\n"

# fmt: off
CASES: list[Case] = [
    # files and directories
    Case("files", "CSV file missing", lambda w: [
        "train", "--train-csv", "nope.csv", "--test-csv", csv_pair(w)[1], *RUN,
    ], "file not found", "nope.csv"),
    Case("files", "CSV path is a directory", lambda w: [
        "train", "--train-csv", str(idx_dir(w).name), "--test-csv", csv_pair(w)[1], *RUN,
    ], "is a directory", "data"),
    Case("files", "--train-csv without --test-csv", lambda w: [
        "train", "--train-csv", csv_pair(w)[0], *RUN,
    ], "must be given together", "--test-csv"),
    Case("files", "data directory missing", lambda w: [
        "train", "--data-dir", "nowhere", *RUN,
    ], "does not exist", "nowhere"),
    Case("files", "data directory lacks one of the four IDX files",
         with_idx(lambda d: (d / IDX_STEMS["test-labels"]).unlink()),
         "lacks t10k-labels-idx1-ubyte.gz", "data"),
    # IDX
    Case("IDX", "truncated gzip", with_idx(truncate_gzip),
         "corrupt or truncated gzip", "train-images-idx3-ubyte.gz"),
    Case("IDX", "corrupt gzip (8 bytes flipped)", with_idx(corrupt_gzip),
         "corrupt or truncated gzip", "train-images-idx3-ubyte.gz"),
    Case("IDX", "wrong magic number",
         with_idx(replace_file("train-labels", b"\x01\x02\x08\x01\x00\x00\x00\x01\x07")),
         "bad magic", "train-labels-idx1-ubyte.gz"),
    Case("IDX", "unknown dtype code",
         with_idx(replace_file("train-labels", gzip.compress(raw_idx(0x07, (1,), b"\x07")))),
         "data type code 0x07", "train-labels-idx1-ubyte.gz"),
    Case("IDX", "images stored as int32, not uint8",
         with_idx(replace_file("train-images", raw_idx(0x0C, (300, 4, 4), bytes(300 * 64)))),
         "expected uint8 images", "train-images-idx3-ubyte.gz"),
    Case("IDX", "data shorter than the header declares",
         with_idx(replace_file("train-images", raw_idx(0x08, (300, 4, 4), bytes(100)))),
         "declares shape", "train-images-idx3-ubyte.gz"),
    Case("IDX", "image and label counts differ",
         with_idx(replace_file("train-labels", raw_idx(0x08, (299,), bytes(299)))),
         "300 images but", "train-labels-idx1-ubyte.gz"),
    Case("IDX", "train and test image sizes differ", lambda w: (
        idx_dir(w, side=4, test_side=5), train_idx_args())[1],
         "train images are", "data"),
    Case("IDX", "image size not what the model expects", evaluate_on_other_image_size,
         "expects 16 values per image", "runs/old"),
    # CSV
    Case("CSV", "empty file", with_bad_train_csv(""), "empty file", "bad.csv"),
    Case("CSV", "missing header", with_bad_train_csv("1,2,3,4,5\n"),
         "line 1: missing header", "bad.csv"),
    Case("CSV", "pixel count not a square", with_bad_train_csv("label,a,b,c\n1,2,3,4\n"),
         "not a square", "bad.csv"),
    Case("CSV", "wrong column count on a line",
         with_bad_train_csv(HEADER_4 + "1,2,3,4,5\n1,2,3,4\n"),
         "line 3: expected 5 columns, found 4", "bad.csv"),
    Case("CSV", "non-integer pixel", with_bad_train_csv(HEADER_4 + "1,2,3.5,4,5\n"),
         r"line 2, column 3 \(pixel2\): '3.5' is not an integer", "bad.csv"),
    Case("CSV", "pixel outside 0-255", with_bad_train_csv(HEADER_4 + "1,2,3,4,256\n"),
         r"line 2, column 5 \(pixel4\): 256 is outside 0-255", "bad.csv"),
    Case("CSV", "negative pixel", with_bad_train_csv(HEADER_4 + "1,-2,3,4,5\n"),
         r"line 2, column 2 \(pixel1\): -2 is outside 0-255", "bad.csv"),
    Case("CSV", "label not an integer", with_bad_train_csv(HEADER_4 + "cat,2,3,4,5\n"),
         r"line 2, column 1 \(label\): 'cat' is not an integer", "bad.csv"),
    Case("CSV", "label outside 0-255", with_bad_train_csv(HEADER_4 + "1000000000,2,3,4,5\n"),
         r"line 2, column 1 \(label\): 1000000000 is outside 0-255", "bad.csv"),
    Case("CSV", "header only, no rows", with_bad_train_csv(HEADER_4),
         "no data rows", "bad.csv"),
    Case("CSV", "binary file, not text", with_bad_train_csv(b"\x89PNG\r\n\x1a\n\xff\xfe"),
         "not a text file", "bad.csv"),
    Case("CSV", "train and test pixel counts differ", lambda w: [
        "train", "--train-csv", csv_pair(w, side=3)[0], "--test-csv",
        str(write_csv(w / "test4.csv", np.zeros((2, 16), np.uint8), np.zeros(2)).name), *RUN,
    ], "16 pixel columns but", "test4.csv"),
    # options
    Case("options", "--epochs 0", lambda w: train_csv_args(w, "--epochs", "0"),
         "epochs must be at least 1", "epochs"),
    Case("options", "--batch-size 0", lambda w: train_csv_args(w, "--batch-size", "0"),
         "--batch-size must be at least 1", "--batch-size"),
    Case("options", "--batch-size larger than the training set",
         lambda w: train_csv_args(w, "--batch-size", "301"),
         r"--batch-size 301 is larger than the training set \(300 images", "--batch-size"),
    Case("options", "--test-batch-size 0", lambda w: train_csv_args(w, "--test-batch-size", "0"),
         "--test-batch-size must be at least 1", "--test-batch-size"),
    Case("options", "--latent-dim 0", lambda w: train_csv_args(w, "--latent-dim", "0"),
         "--latent-dim must be at least 1", "--latent-dim"),
    Case("options", "--cuda-graphs without a CUDA device",
         lambda w: train_csv_args(w, "--cuda-graphs", "--device", "cpu"),
         r"--cuda-graphs replays the MLP's hand-written step on a CUDA device, but the device is "
         "cpu", "--cuda-graphs"),
    Case("options", "--lr 0", lambda w: train_csv_args(w, "--lr", "0"),
         "--lr .the learning rate. must be a finite number above 0, got 0.0", "--lr"),
    Case("options", "--lr -1", lambda w: train_csv_args(w, "--lr", "-1"),
         "--lr .the learning rate. must be a finite number above 0, got -1.0", "--lr"),
    Case("options", "--lr nan", lambda w: train_csv_args(w, "--lr", "nan"),
         "--lr .the learning rate. must be a finite number above 0, got nan", "--lr"),
    Case("options", "--lr inf", lambda w: train_csv_args(w, "--lr", "inf"),
         "--lr .the learning rate. must be a finite number above 0, got inf", "--lr"),
    Case("options", "--hidden 8,x", lambda w: train_csv_args(w, "--hidden", "8,x"),
         "expected comma-separated integers", "--hidden"),
    Case("options", "--epochs two", lambda w: train_csv_args(w, "--epochs", "two"),
         "'two' is not a valid integer", "--epochs"),
    Case("options", "unknown option", lambda w: train_csv_args(w, "--epoch", "3"),
         "No such option '--epoch'", "--epoch"),
    # run directory
    Case("run directory", "run directory already exists", existing_run,
         "already exists; pass --overwrite", "runs/r"),
    Case("run directory", "run directory holds a resumable run",
         lambda w: (trained_run(w), train_csv_args(w))[1],
         "already exists; pass --resume runs/r to continue it, --overwrite", "runs/r"),
    Case("run directory", "run directory path is a file", run_dir_is_a_file,
         "exists and is not a directory", "runs/r"),
    Case("run directory", "runs directory cannot be created", runs_dir_under_a_file,
         "cannot write the run directory", "blocker/runs/r"),
    Case("run directory", "--checkpoint-every 0",
         lambda w: train_csv_args(w, "--checkpoint-every", "0"),
         "--checkpoint-every must be at least 1 step", "--checkpoint-every"),
    # resuming
    Case("resume", "--resume of a missing run", lambda w: ["train", "--resume", "runs/none"],
         "run directory not found", "runs/none"),
    Case("resume", "--resume of a run without a checkpoint", without_checkpoint,
         "no checkpoint.safetensors; nothing to resume", "runs/old"),
    Case("resume", "--resume with --overwrite", resume_spoiled(lambda r: None, "--overwrite"),
         "drop --overwrite", "runs/r"),
    Case("resume", "--resume with a training option", resume_spoiled(lambda r: None, "--lr", "1"),
         "settings in its config.json; drop --lr", "runs/r"),
    Case("resume", "checkpoint truncated",
         resume_spoiled(spoil_checkpoint(lambda raw: raw[: len(raw) // 2])),
         "not a valid safetensors file", "runs/r/checkpoint.safetensors"),
    Case("resume", "checkpoint is a torch.save file", resume_spoiled(torch_save_checkpoint),
         "torch.save .zip. file, not safetensors; refused and not unpickled",
         "runs/r/checkpoint.safetensors"),
    Case("resume", "config.json edited after the checkpoint", resume_spoiled(edit_config),
         "config.json has changed since the checkpoint was written; cannot resume",
         "runs/r/checkpoint.safetensors"),
    Case("resume", "training data changed after the checkpoint",
         resume_spoiled(edit_training_data), "data differ from those the run was started with",
         "runs/r/checkpoint.safetensors"),
    # checkpoints (read by `vaelab evaluate`)
    Case("checkpoints", "run directory missing", lambda w: ["evaluate", "runs/none"],
         "run directory not found", "runs/none"),
    Case("checkpoints", "config.json missing",
         evaluate_spoiled(lambda r: (r / "config.json").unlink()),
         "not found", "runs/old/config.json"),
    Case("checkpoints", "config.json not JSON",
         evaluate_spoiled(lambda r: (r / "config.json").write_text("{oops")),
         "not valid JSON", "runs/old/config.json"),
    Case("checkpoints", "config.json with a bad value", evaluate_spoiled(
        lambda r: (r / "config.json").write_text(
            '{"model": {"latent_dim": 0}, "data": {}, "train": {}}')),
         "latent_dim must be at least 1", "runs/old/config.json"),
    Case("checkpoints", "weights file missing",
         evaluate_spoiled(lambda r: (r / "model.safetensors").unlink()),
         "not found", "runs/old/model.safetensors"),
    Case("checkpoints", "weights file empty",
         evaluate_spoiled(lambda r: (r / "model.safetensors").write_bytes(b"")),
         "not a valid safetensors file", "runs/old/model.safetensors"),
    Case("checkpoints", "weights file truncated", evaluate_spoiled(truncate_weights),
         "not a valid safetensors file", "runs/old/model.safetensors"),
    Case("checkpoints", "weights of another architecture", evaluate_spoiled(other_architecture),
         r"mu_head.weight has shape \(3, 4\), the model expects \(2, 4\)",
         "runs/old/model.safetensors"),
    Case("checkpoints", "torch.save file renamed model.safetensors",
         evaluate_spoiled(torch_save_renamed),
         "torch.save.*not unpickled", "runs/old/model.safetensors"),
    Case("checkpoints", "pickle that runs code, renamed model.safetensors",
         evaluate_spoiled(pickle_bomb),
         "pickle.*not unpickled", "runs/old/model.safetensors"),
    Case("checkpoints", "weights holding NaN", evaluate_spoiled(nan_weights),
         "mu_head.weight holds non-finite values", "runs/old/model.safetensors"),
]
# fmt: on


def _gather() -> list[Case]:
    """The cases above and those of the groups that keep their own module."""
    from tests import cases_builtin, cases_data, cases_reads, cases_runs, cases_sources
    from tests.cases_bounds import CASES as BOUNDS_CASES
    from tests.cases_config import CASES as CONFIG_CASES
    from tests.cases_export import CASES as EXPORT_CASES
    from tests.cases_outputs import CASES as OUTPUTS_CASES
    from tests.cases_studies import CASES as STUDIES_CASES

    return [
        *CASES, *cases_reads.CASES, *cases_runs.CASES, *cases_data.CASES, *cases_sources.CASES,
        *cases_builtin.CASES, *EXPORT_CASES, *STUDIES_CASES, *OUTPUTS_CASES,
        *BOUNDS_CASES, *CONFIG_CASES,
    ]  # fmt: skip


CASES = _gather()
