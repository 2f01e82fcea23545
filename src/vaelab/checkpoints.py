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
from safetensors.torch import load_file, save

from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
WEIGHTS_FILE = "model.safetensors"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `path` so that a crash leaves either the old file or the new one, whole."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_run_dir(run_dir: Path, overwrite: bool = False) -> Path:
    """Create `run_dir`; refuse one that already holds a run unless `overwrite`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise VaelabError(
            f"{run_dir}: run directory already exists; pass --overwrite to replace it "
            "or --name to choose another"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VaelabError(f"{run_dir}: cannot write the run directory ({exc.strerror})") from None
    return run_dir


def save_config(run_dir: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    payload = {**config.to_dict(), **extra}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def load_config(run_dir: Path) -> RunConfig:
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


def load_weights(path: Path, model: VAE) -> VAE:
    """Load safetensors weights into `model`, naming any mismatch; never unpickles anything."""
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise VaelabError(f"{path}: not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise VaelabError(f"{path}: not a valid safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"{path}: weights do not match the model (missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'})"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise VaelabError(
                f"{path}: {name} has shape {tuple(state[name].shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuild the model of a run directory from config.json and model.safetensors, in eval mode."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: run directory not found")
    config = load_config(run_dir)
    model = load_weights(run_dir / WEIGHTS_FILE, VAE(config.model))
    return model.to(device).eval()
