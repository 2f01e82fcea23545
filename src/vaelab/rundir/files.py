"""The files of a run directory: config.json, metrics.csv, the weights (safetensors, never
pickle), the record of which weights the figures show, and the one loader of a model."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save
from torch import nn

from vaelab._io import atomic_write_bytes, atomic_write_text, parse_json, read_bytes, read_text
from vaelab._outputs import check_run_file, check_run_folder
from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE, build_model

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
# metrics.csv's columns: the fields of `vaelab.training.events.EpochMetrics`, in that order. The
# test and validation columns may be empty (not measured that epoch; read as NaN), and runs of
# vaelab 0.1 lack the validation columns.
METRICS_COLUMNS = (
    "epoch", "seconds", "train_loss", "train_reconstruction", "train_kld", "test_loss",
    "test_reconstruction", "test_kld", "val_loss", "val_reconstruction", "val_kld",
)  # fmt: skip
_REQUIRED_COLUMNS = METRICS_COLUMNS[:8]
_MEASURED_COLUMNS = METRICS_COLUMNS[:5]  # never empty: every epoch trains
# The model a run ends with: the best validation epoch's weights when a validation split was held
# out (else the last epoch's), and the last epoch's weights beside them.
WEIGHTS_FILE = "model.safetensors"
LAST_WEIGHTS_FILE = "last.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
EVAL_FILE = "eval.json"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
# The figures vaelab draws into RUN/figures/ (`vaelab.viz.plots.draw_figures` in this order),
# and RUN/figures.json, the record of which weights they were drawn from.
FIGURE_FILES = (
    "learning_curves.png",
    "reconstructions.png",
    "latent.png",
    "manifold.png",
    "samples.png",
    "interpolation.png",
)
FIGURES_RECORD = "figures.json"
# The TensorBoard event files of `vaelab.training.tensorboard.TensorBoardLogger`: all vaelab's.
TENSORBOARD_DIR = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."  # how TensorBoard's writer names its event files
# The advisory lock held by the process writing a run; it holds that process's PID.
LOCK_FILE = ".lock"
_PROBE_FILE = ".write-test"
# The files of a run that a new one could be mixed up with.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, LAST_WEIGHTS_FILE, CHECKPOINT_FILE)
# Every file vaelab writes at the top of a run directory: what overwrite=True removes.
VAELAB_FILES = (*RUN_FILES, EVAL_FILE, REPORT_FILE, FIGURES_RECORD)


# ---------------------------------------------------------------- what vaelab writes in a run


def check_figure_paths(run_dir: str | Path) -> None:
    """Refuse to draw a run's figures where RUN/figures/, a figure in it or RUN/figures.json is
    something else than vaelab's own (a file, a pipe, a symbolic link), before anything is drawn."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir / FIGURES_DIR, "figures", FIGURE_FILES)
    check_run_file(run_dir / FIGURES_RECORD)


def check_run_paths(run_dir: str | Path) -> None:
    """Refuse to write, overwrite or resume a run where any path vaelab writes or removes in it
    is something else than vaelab's own: nothing is then written or removed through a link."""
    run_dir = Path(run_dir)
    for name in VAELAB_FILES:
        check_run_file(run_dir / name)
    check_figure_paths(run_dir)
    check_run_folder(run_dir / TENSORBOARD_DIR, "TensorBoard logs")


# ---------------------------------------------------------------- fingerprints of the weights

# The SHA-256 of the weights file as `load_model` last read it, by resolved path: what a later
# write about those weights (eval.json) checks the file against.
_LOADED_WEIGHTS: dict[str, str] = {}


def weights_sha256(run_dir: str | Path) -> str:
    """The SHA-256 (hex) of RUN/model.safetensors: the fingerprint of the weights of a run."""
    return hashlib.sha256(read_bytes(Path(run_dir) / WEIGHTS_FILE)).hexdigest()


def loaded_weights_sha256(run_dir: str | Path) -> str | None:
    """The fingerprint of RUN/model.safetensors as this process last loaded it, if it did."""
    return _LOADED_WEIGHTS.get(str((Path(run_dir) / WEIGHTS_FILE).resolve()))


def figures_weights_sha256(run_dir: str | Path) -> str | None:
    """The fingerprint of the weights RUN/figures/ was drawn from, None when not recorded."""
    path = Path(run_dir) / FIGURES_RECORD
    try:
        raw = parse_json(read_bytes(path), path)
    except VaelabError:
        return None
    value = raw.get("weights_sha256") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def record_figures(run_dir: str | Path, sha256: str) -> None:
    """Record in RUN/figures.json the fingerprint of the weights RUN/figures/ was drawn from."""
    path = Path(run_dir) / FIGURES_RECORD
    atomic_write_text(path, json.dumps({"weights_sha256": sha256}) + "\n")


def save_config(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    """Write RUN/config.json: the config, and what vaelab records beside it (`extra`)."""
    payload = {**config.to_dict(), **extra}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def extend_epochs(run_dir: Path, epochs: int) -> None:
    """Set train.epochs in RUN/config.json (a resume that trains the run further), nothing else."""
    payload = load_run_info(run_dir)
    update_run_info(run_dir, train={**payload.get("train", {}), "epochs": epochs})


def update_run_info(run_dir: Path, **sections: Any) -> None:
    """Replace (or add) top-level sections of RUN/config.json, keeping the rest as it is."""
    payload = {**load_run_info(run_dir), **sections}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def load_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The whole config.json, including what vaelab recorded beside the config (versions, data)."""
    if not Path(run_dir).is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        raise VaelabError(f"{path}: not found; is {run_dir} a vaelab run directory?")
    raw = parse_json(read_bytes(path, "a JSON file"), path)
    if not isinstance(raw, dict):
        raise VaelabError(f"{path}: expected a JSON object")
    return raw


def load_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig of a run directory, every field checked."""
    raw = load_run_info(run_dir)
    try:
        return RunConfig.from_dict(raw, complete=True)  # what it records beside is not read
    except (TypeError, VaelabError) as exc:
        raise VaelabError(f"{Path(run_dir) / CONFIG_FILE}: {exc}") from None


# Columns renamed since vaelab 0.1: runs written then are read under the new names.
_OLD_METRIC_NAMES = {"train_mse": "train_reconstruction", "test_mse": "test_reconstruction"}


def save_metrics(run_dir: Path, history: list[Any]) -> None:
    """Write one row per epoch (a list of dataclass instances) as metrics.csv."""
    if not history:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(history[0])])
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if _not_measured(v) else v for k, v in asdict(row).items()})
    atomic_write_text(run_dir / METRICS_FILE, out.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of RUN/metrics.csv as floats, under today's column names.

    At least one row; every row has the columns of METRICS_COLUMNS (the validation columns may be
    absent, as in vaelab 0.1's runs), finite numbers, and empty cells (NaN here) only in the test
    and validation columns, for passes that did not run.
    """
    path = Path(run_dir) / METRICS_FILE
    reader = csv.DictReader(io.StringIO(read_text(path, "a CSV file"), newline=""))
    rows = []
    try:
        for line_no, row in enumerate(reader, start=2):
            cells = {_OLD_METRIC_NAMES.get(k, k): v for k, v in row.items() if k}
            missing = [name for name in _REQUIRED_COLUMNS if name not in cells]
            if missing:
                raise VaelabError(f"{path}: line {line_no} lacks {', '.join(missing)}")
            given = {name: cells[name] for name in METRICS_COLUMNS if cells.get(name, "") != ""}
            values = {name: float(given[name]) if name in given else math.nan
                      for name in METRICS_COLUMNS}  # fmt: skip
            measured = all(name in given for name in _MEASURED_COLUMNS)
            if not measured or not all(math.isfinite(values[name]) for name in given):
                raise VaelabError(f"{path}: line {line_no} holds a value that is not finite")
            rows.append(values)
    except (ValueError, TypeError) as exc:
        raise VaelabError(f"{path}: not a vaelab metrics file ({exc})") from None
    if not rows:
        raise VaelabError(f"{path}: no epochs recorded (only a header, or empty)")
    return rows


def _not_measured(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def save_weights(
    run_dir: Path, model: VAE | dict[str, torch.Tensor], name: str = WEIGHTS_FILE
) -> None:
    """Write a model's weights (or a state dict) to RUN/model.safetensors, or RUN/`name`."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {key: t.detach().cpu().contiguous() for key, t in state.items()}
    atomic_write_bytes(run_dir / name, save(tensors))


# Told apart only to explain a refusal: a zip archive (torch.save's format since 1.6) or a
# pickle stream of protocol 2-5. safetensors itself never runs code from a file.
_FOREIGN_SIGNATURES = (
    ((b"PK\x03\x04",), "a torch.save (zip) file"),
    ((b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), "a Python pickle"),
)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else is refused and never unpickled."""
    return read_safetensors(path)[0]


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file; never unpickles anything."""
    return _tensors_of(path, read_bytes(path, expected="a safetensors file"))


def _tensors_of(path: Path, raw: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = load_safetensors(raw)
    except (SafetensorError, ValueError, TypeError, OverflowError, RuntimeError) as exc:
        for signatures, kind in _FOREIGN_SIGNATURES:
            if raw.startswith(signatures):
                raise VaelabError(
                    f"{path}: is {kind}, not safetensors; refused and not unpickled "
                    "(vaelab loads only safetensors)"
                ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VaelabError(f"{path}: not a valid safetensors file ({reason})") from None
    # The header was just validated by safetensors: 8 bytes of length, then a JSON object.
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return tensors, header.get("__metadata__") or {}


def load_weights(path: Path, model: VAE) -> VAE:
    """Load safetensors weights into `model`, naming any mismatch; never unpickles anything."""
    state = read_tensors(path)
    check_weights(path, state, model.state_dict())
    model.load_state_dict(state)
    return model


# Floating dtypes whose values can be checked and loaded into the model's fp32 layers.
_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_weights(
    path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    """Refuse tensors whose names, shapes or kinds differ from `expected`, or that hold NaN/inf."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"{path}: weights do not match the model (missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'})"
        )
    for name, tensor in expected.items():
        got = state[name]
        if got.shape != tensor.shape:
            raise VaelabError(
                f"{path}: {name} has shape {tuple(got.shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
        if got.is_floating_point() != tensor.is_floating_point() or (
            got.is_floating_point() and got.dtype not in _WEIGHT_DTYPES
        ):
            raise VaelabError(
                f"{path}: {name} has dtype {got.dtype}, the model expects {tensor.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise VaelabError(f"{path}: {name} holds non-finite values; the file is damaged")


def model_skeleton(config: RunConfig, source: Path) -> VAE:
    """The model `config` describes, on the meta device: its shapes without allocating memory.

    A config.json is not trusted: its sizes are checked against the weights file before any real
    tensor of that size is made.
    """
    try:
        with torch.device("meta"):
            return build_model(config.model)
    except (RuntimeError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        raise VaelabError(f"{source}: describes a model that cannot be built ({exc})") from None


def load_model(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> VAE:
    """Rebuild the model of a run directory from config.json and model.safetensors, in eval mode.

    A model trained with networks of your own needs the same `encoder` and `decoder` modules
    (built by your code; the run directory holds their weights, never code).
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    custom = config.model.arch == "custom"
    if custom and (encoder is None or decoder is None):
        raise VaelabError(
            f"{run_dir}: was trained with networks of your own; load it with "
            "vaelab.load(run, encoder=..., decoder=...) and the modules your code builds",
            parameters=("encoder", "decoder"),
        )
    if not custom and (encoder is not None or decoder is not None):
        raise VaelabError(
            f"{run_dir}: holds a built-in {config.model.arch} model; load it without encoder "
            "and decoder",
            parameters=("encoder", "decoder"),
        )
    path = run_dir / WEIGHTS_FILE
    raw = read_bytes(path, expected="a safetensors file")
    state = _tensors_of(path, raw)[0]
    model = (
        VAE(config.model, encoder=encoder, decoder=decoder)
        if custom
        else model_skeleton(config, run_dir / CONFIG_FILE)
    )
    check_weights(path, state, model.state_dict())
    _LOADED_WEIGHTS[str(path.resolve())] = hashlib.sha256(raw).hexdigest()
    if not custom:
        model = build_model(config.model)
    model.load_state_dict(state)
    return model.to(device).eval()


def image_shape(info: dict[str, Any], input_dim: int, run_dir: str | Path) -> tuple[int, int]:
    """(height, width) of a run's images as its config.json recorded them, else square."""
    dataset = info.get("dataset")
    shape = dataset.get("image_shape") if isinstance(dataset, dict) else None
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and all(type(v) is int for v in shape)
        and shape[0] * shape[1] == input_dim
    ):
        return shape[0], shape[1]
    side = math.isqrt(input_dim)
    if side * side != input_dim:
        raise VaelabError(f"{run_dir}: config.json does not say the shape of its images")
    return side, side
