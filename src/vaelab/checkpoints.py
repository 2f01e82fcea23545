"""The run directory: config.json, metrics.csv and model.safetensors, all written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save

from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
# What --overwrite removes: the files of the earlier run that a new one could be mixed up with.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, CHECKPOINT_FILE)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `path` so that a crash leaves either the old file or the new one, whole.

    The bytes go to a temporary file in the same directory, are fsynced, then renamed over `path`;
    a failed write (disk full, permissions) leaves the earlier `path` untouched.
    """
    temp_name = None
    try:
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise VaelabError(f"{path}: could not write ({exc.strerror or exc}); {kept}") from None
    finally:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, so a power cut cannot bring back the old file."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create `run_dir` (or reopen it to resume) and check that it can be written.

    A directory that already holds something is refused unless `overwrite` (which removes the
    earlier run's files) or `resume` (which needs its checkpoint).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: exists and is not a directory")
    if resume:
        if not (run_dir / CHECKPOINT_FILE).is_file():
            what = "run directory not found" if not run_dir.is_dir() else f"no {CHECKPOINT_FILE}"
            raise VaelabError(f"{run_dir}: {what}; nothing to resume")
        _remove_stale_temp_files(run_dir)
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            resumable = (run_dir / CHECKPOINT_FILE).is_file()
            hint = f"--resume {run_dir} to continue it, " if resumable else ""
            raise VaelabError(
                f"{run_dir}: run directory already exists; pass {hint}--overwrite to replace it "
                "or --name to choose another"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None
    return run_dir


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Remove temporary files of writes that a crash cut short; the files they target are whole."""
    for name in RUN_FILES:
        for temp in run_dir.glob(f".{name}.*.tmp"):
            temp.unlink(missing_ok=True)


def save_config(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    payload = {**config.to_dict(), **extra}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def load_config(run_dir: Path) -> RunConfig:
    if not Path(run_dir).is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    path = Path(run_dir) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VaelabError(f"{path}: not found; is {run_dir} a vaelab run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VaelabError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise VaelabError(f"{path}: expected a JSON object")
    try:
        return RunConfig.from_dict({key: raw.get(key, {}) for key in ("model", "data", "train")})
    except (TypeError, VaelabError) as exc:
        raise VaelabError(f"{path}: {exc}") from None


def load_run_info(run_dir: Path) -> dict[str, Any]:
    """The whole config.json, including what vaelab recorded beside the config (versions, data)."""
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))


def save_metrics(run_dir: Path, history: list[Any]) -> None:
    """Write one row per epoch (a list of dataclass instances) as metrics.csv."""
    if not history:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(history[0])])
    writer.writeheader()
    for row in history:
        writer.writerow(asdict(row))
    atomic_write_text(run_dir / METRICS_FILE, out.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / METRICS_FILE
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [
                {key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)
            ]
    except FileNotFoundError:
        raise VaelabError(f"{path}: not found") from None
    except (ValueError, TypeError) as exc:
        raise VaelabError(f"{path}: not a vaelab metrics file ({exc})") from None


def save_weights(run_dir: Path, model: VAE) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save(tensors))


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
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise VaelabError(f"{path}: not found") from None
    except IsADirectoryError:
        raise VaelabError(f"{path}: is a directory, expected a safetensors file") from None
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read ({exc.strerror or exc})") from None
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
        if got.is_floating_point() != tensor.is_floating_point():
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
            return VAE(config.model)
    except (RuntimeError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        raise VaelabError(f"{source}: describes a model that cannot be built ({exc})") from None


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the model of a run directory from config.json and model.safetensors, in eval mode."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    path = run_dir / WEIGHTS_FILE
    state = read_tensors(path)
    check_weights(path, state, model_skeleton(config, run_dir / CONFIG_FILE).state_dict())
    model = VAE(config.model)
    model.load_state_dict(state)
    return model.to(device).eval()
