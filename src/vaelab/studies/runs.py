"""Many runs at a glance: the status, model and numbers of every run directory in a folder.

A run is read, never written: no lock is taken (a run being written shows as running), and a
damaged file gives the run a status that says so instead of an error.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vaelab._io import open_regular, parse_json, read_at_most
from vaelab.config import ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVAL_FILE,
    LOCK_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    load_config,
    load_run_info,
    read_metrics,
    weights_sha256,
)
from vaelab.rundir.lock import lock_state
from vaelab.training.checkpoint import FORMAT, METADATA_KEY

# The statuses of a run, as `RunSummary.status` names them.
FINISHED = "finished"
STOPPED = "stopped"  # a checkpoint to resume from, epochs left
INCOMPLETE = "incomplete"  # config.json only: stopped or failed before its first checkpoint
RUNNING = "running"  # a live process holds the run's lock
DAMAGED = "damaged"  # a file vaelab needs cannot be read
STATUSES = (FINISHED, STOPPED, INCOMPLETE, RUNNING, DAMAGED)
# A folder made by `vaelab sweep`: its runs are listed as STUDY/RUN.
SWEEP_FILE = "sweep.json"
_MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one vaelab wrote
_MARKERS = (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE, LOCK_FILE)


@dataclass(frozen=True)
class RunSummary:
    """One run directory as `vaelab runs` lists it; a number it cannot know is None."""

    name: str
    path: Path
    status: str  # one of STATUSES
    detail: str  # the status in words: "stopped at epoch 3 (resumable)"
    arch: str | None = None
    hidden: tuple[int, ...] = ()
    latent_dim: int | None = None
    likelihood: str | None = None
    variant: str = ""  # what sets the model apart from a plain VAE: "vamp 2-layer conditional"
    epochs_done: int | None = None
    epochs: int | None = None
    best_val_loss: float | None = None
    test_loss: float | None = None  # the last test loss metrics.csv recorded
    iwae_nll: float | None = None  # from eval.json, only when it is of the current weights
    modified: float = 0.0  # the newest modification time of the run's files (epoch seconds)

    @property
    def model(self) -> str:
        """The model in one word: 'mlp 8-4 z2 tutorial-mse'."""
        if self.arch is None:
            return "-"
        hidden = "-".join(map(str, self.hidden))
        variant = f" {self.variant}" if self.variant else ""
        return f"{self.arch} {hidden} z{self.latent_dim} {self.likelihood}{variant}"


def model_variant(model: ModelConfig, train: TrainConfig) -> str:
    """The prior, layers, conditioning and objective of a run where they are not the defaults."""
    parts = []
    if model.prior != "gaussian":
        parts.append(f"{model.prior}-prior")
    if model.stochastic_layers == 2:
        parts.append("2-layer")
    if model.conditional:
        parts.append("conditional")
    if train.objective == "iwae":
        parts.append(f"iwae-k{train.train_samples}")
    return " ".join(parts)


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a folder holding any of the files a run leaves."""
    return path.is_dir() and any((path / name).exists() for name in _MARKERS)


def list_runs(runs_dir: str | Path = "runs") -> list[RunSummary]:
    """The runs in `runs_dir`, by name; the runs of a sweep's folder as STUDY/RUN.

    A folder that holds neither a run nor a sweep is left out; a missing `runs_dir` is an error.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise VaelabError(f"{root}: runs folder not found")
    summaries = []
    for child in sorted(root.iterdir()):
        if is_run_dir(child):
            summaries.append(summarize_run(child, child.name))
        elif child.is_dir() and (child / SWEEP_FILE).is_file():
            summaries += [
                summarize_run(run, f"{child.name}/{run.name}")
                for run in sorted(child.iterdir())
                if is_run_dir(run)
            ]
    return summaries


def summarize_run(run_dir: str | Path, name: str | None = None) -> RunSummary:
    """The summary of one run directory; never raises for what is in it."""
    run_dir = Path(run_dir)
    name = name or run_dir.name
    modified = _newest_mtime(run_dir)
    lock = lock_state(run_dir)
    if lock.held:
        holder = f"PID {lock.pid}" if lock.pid is not None else "PID unknown"
        base = RunSummary(name, run_dir, RUNNING, f"running ({holder})", modified=modified)
        return _with_numbers(base, run_dir, running=True)
    if not any((run_dir / name).exists() for name in _MARKERS[:4]):  # a start cut short
        return RunSummary(name, run_dir, INCOMPLETE, f"incomplete (no {CONFIG_FILE} yet)",
                          modified=modified)  # fmt: skip
    try:
        load_run_info(run_dir)
        config = load_config(run_dir)
        done = checkpoint_epochs(run_dir)
    except VaelabError as exc:
        return RunSummary(name, run_dir, DAMAGED, f"damaged: {_short(exc, run_dir)}",
                          modified=modified)  # fmt: skip
    status, detail = _status(run_dir, config.train.epochs, done)
    return _with_numbers(RunSummary(name, run_dir, status, detail, modified=modified), run_dir)


def _status(run_dir: Path, epochs: int, done: int | None) -> tuple[str, str]:
    has_weights = (run_dir / WEIGHTS_FILE).is_file()
    if done is not None and (done < epochs and not _stopped_early(run_dir) or not has_weights):
        return STOPPED, f"stopped at epoch {done} (resumable)"
    if has_weights:
        return FINISHED, FINISHED
    return INCOMPLETE, f"incomplete ({CONFIG_FILE} only, no checkpoint)"


def _with_numbers(base: RunSummary, run_dir: Path, running: bool = False) -> RunSummary:
    """`base` with what config.json, metrics.csv and eval.json say; what fails is left None."""
    fields: dict[str, Any] = {}
    try:
        config = load_config(run_dir)
    except VaelabError:
        return base
    model = config.model
    fields.update(arch=model.arch, hidden=tuple(model.hidden), latent_dim=model.latent_dim,
                  likelihood=model.likelihood, epochs=config.train.epochs,
                  variant=model_variant(model, config.train))  # fmt: skip
    rows = metrics_rows(run_dir)
    fields["epochs_done"] = len(rows) if rows else 0
    fields["best_val_loss"] = _best([row["val_loss"] for row in rows])
    fields["test_loss"] = _last([row["test_loss"] for row in rows])
    if not running:
        fields["iwae_nll"] = current_iwae(run_dir)
    return replace(base, **fields)


def metrics_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of RUN/metrics.csv, none when it is missing or cannot be read."""
    try:
        return read_metrics(run_dir)
    except VaelabError:
        return []


def _best(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else None


def _last(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else None


def current_iwae(run_dir: str | Path) -> float | None:
    """IWAE -log p(x) from RUN/eval.json when it records the SHA-256 of the current weights."""
    run_dir = Path(run_dir)
    path = run_dir / EVAL_FILE
    try:
        raw = parse_json(_read_small(path), path)
        if not isinstance(raw, dict) or raw.get("weights_sha256") != weights_sha256(run_dir):
            return None
    except VaelabError:
        return None
    value = raw.get("iwae_nll_nats")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _read_small(path: Path, most: int = 1 << 20) -> bytes:
    with open_regular(path, "a JSON file") as handle:
        return read_at_most(handle, most)


def checkpoint_epochs(run_dir: str | Path) -> int | None:
    """The epochs_done that RUN/checkpoint.safetensors records (its header only is read), or
    None when the run has no checkpoint."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    meta = _checkpoint_record(path)
    done = meta.get("epochs_done")
    if type(done) is not int or done < 0:
        raise VaelabError(f"{path}: not a vaelab training checkpoint ({FORMAT})")
    return done


def _checkpoint_record(path: Path) -> dict[str, Any]:
    """The JSON record in a checkpoint's safetensors metadata, from the header alone."""
    damaged = VaelabError(f"{path}: not a vaelab training checkpoint ({FORMAT})")
    with open_regular(path, "a safetensors file") as handle:
        size = int.from_bytes(read_at_most(handle, 8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise damaged
        header = read_at_most(handle, size)
    try:
        metadata = json.loads(header).get("__metadata__") or {}
        meta = json.loads(metadata.get(METADATA_KEY, ""))
    except (ValueError, AttributeError, TypeError):
        raise damaged from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise damaged
    return meta


def _stopped_early(run_dir: Path) -> bool:
    try:
        selection = load_run_info(run_dir).get("selection")
    except VaelabError:
        return False
    return isinstance(selection, dict) and selection.get("stopped_early") is True


def _newest_mtime(run_dir: Path) -> float:
    times = []
    for name in _MARKERS[:4]:
        with suppress(OSError):
            times.append(os.stat(run_dir / name).st_mtime)
    if not times:
        try:
            times.append(run_dir.stat().st_mtime)
        except OSError:
            times.append(0.0)
    return max(times)


def _short(error: VaelabError, run_dir: Path) -> str:
    """The error's message without the run directory's own path in front."""
    text = str(error)
    prefix = f"{run_dir}/"
    return text[len(prefix) :] if text.startswith(prefix) else text


# ---------------------------------------------------------------- the table


def age_text(seconds: float) -> str:
    """An age in the largest whole unit: '45s', '12m', '3h', '5d'."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def loss_text(value: float | None, digits: int = 2) -> str:
    """A loss as the tables show it; '-' when not known."""
    return "-" if value is None else f"{value:.{digits}f}"


RUNS_HEADERS = ("run", "status", "model", "epochs", "best val", "test loss", "IWAE NLL", "age")


def runs_rows(summaries: list[RunSummary], now: float | None = None) -> list[list[str]]:
    """The cells of `vaelab runs`'s table, one row per run."""
    now = time.time() if now is None else now
    return [
        [
            s.name,
            s.detail,
            s.model,
            "-" if s.epochs is None else f"{s.epochs_done or 0}/{s.epochs}",
            loss_text(s.best_val_loss),
            loss_text(s.test_loss),
            loss_text(s.iwae_nll),
            age_text(now - s.modified),
        ]
        for s in summaries
    ]


def text_table(headers: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers to the right."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if _numeric(cell) and i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].lstrip("-")
    return cell == "-" or head.replace(".", "", 1).replace("/", "", 1).isdigit()
