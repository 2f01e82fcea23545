"""Full training checkpoints: all a run needs to continue bit for bit, stored without pickle.

One file, `checkpoint.safetensors`, holds the tensors (weights, Adam's moments, the torch RNG
states, the epoch's permutation and running loss sums) and, in its metadata, a JSON record of the
rest (epochs and steps done, metrics so far, optimizer and scheduler settings, the Python and NumPy
RNG states). One file is replaced by one atomic rename, so a crash at any instant leaves either the
previous checkpoint or the new one, whole. Every field is checked on loading: the file is untrusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from vaelab._io import atomic_write_bytes, parse_json
from vaelab.config import READING_FIELDS
from vaelab.data.images import Images
from vaelab.errors import VaelabError
from vaelab.rundir import check_weights, read_safetensors
from vaelab.training.checkpoint_checks import conform, optimizer_state, prefixed, rng_restorer

FORMAT = "vaelab-checkpoint-1"
METADATA_KEY = "vaelab"


@dataclass
class EpochProgress:
    """A position inside an epoch: what a checkpoint written mid-epoch restores."""

    step: int  # optimizer steps done in this epoch
    order: torch.Tensor  # this epoch's permutation of the training images
    totals: torch.Tensor  # running sums of (loss, reconstruction, KL) over those steps


@dataclass
class TrainingState:
    """Where a run stands: epochs finished, progress inside the next one, metrics so far."""

    epochs_done: int = 0
    progress: EpochProgress | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, torch.Tensor] | None = None  # the best validation epoch's weights so far


@dataclass
class Trainables:
    """The objects whose state a checkpoint captures and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator


@dataclass(frozen=True)
class Layout:
    """The shape of the run a checkpoint must fit: used to check its numbers on loading."""

    epochs: int
    steps_per_epoch: int
    train_images: int
    history_row: dict[str, Any]  # a metrics row with values of the right types (int or float)


# ---------------------------------------------------------------- identity


def fingerprint(*parts: Any) -> str:
    """SHA-256 of JSON values, tensors and Images: what must not change between a run and its
    resume. Images count by their own fingerprint (`vaelab.data.images.Images.fingerprint`)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Images):
            digest.update(part.fingerprint().encode())
        elif isinstance(part, torch.Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()


def float_fingerprint(images: Sequence[Images]) -> str:
    """SHA-256 of `images` as float32 values, one after the other: the data fingerprint that
    checkpoints of earlier versions recorded (computed only to resume one of those)."""
    digest = hashlib.sha256()
    for part in images:
        part.hash_floats_into(digest)
    return digest.hexdigest()


class LaterFingerprint:
    """`fingerprint(*parts)`, computed in a thread of its own once `start` is called (training
    calls it after its first step) at the lowest scheduling priority: a large training set's hash
    takes the CPU time the steps leave, not the start's. Hashing releases the GIL."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts
        self.future: Future[str] | None = None

    def start(self) -> None:
        """Begin hashing (once)."""
        if self.future is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaelab-fingerprint")
            self.future = executor.submit(_fingerprint_gently, *self.parts)
            executor.shutdown(wait=False)

    def done(self) -> bool:
        """Whether the fingerprint is ready."""
        return self.future is not None and self.future.done()

    def result(self) -> str:
        """The fingerprint, waited for (and started, if it was not)."""
        self.start()
        assert self.future is not None
        return self.future.result()


def _fingerprint_gently(*parts: Any) -> str:
    with contextlib.suppress(AttributeError, OSError):  # Linux: each thread has its own niceness
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return fingerprint(*parts)


def run_identity(
    config: dict[str, Any],
    images: Sequence[Images | torch.Tensor],
    device: torch.device,
    precision: str,
    data: str | LaterFingerprint | None = None,
) -> dict[str, Any]:
    """What a resume is checked against: config and data must match, the rest is reported.
    How the data is read (`vaelab.config.READING_FIELDS`) is not part of the config's part.
    `data` is the images' fingerprint when already computed (or to be: a `LaterFingerprint`,
    resolved when a checkpoint past the start is written, see `resolved_identity`)."""
    config = {section: dict(values) for section, values in config.items()}
    for section, names in READING_FIELDS.items():
        for name in names:
            config.get(section, {}).pop(name, None)
    return {
        "config": fingerprint(config),
        "data": fingerprint(*images) if data is None else data,
        "device": device.type,
        "precision": precision,
        "threads": torch.get_num_threads(),
    }


def resolved_identity(identity: dict[str, Any], at_start: bool) -> dict[str, Any]:
    """`identity` with its data fingerprint computed: waited for, except in a checkpoint of the
    start (no step taken, nothing learned from the data), which holds None until it is ready."""
    data = identity["data"]
    if isinstance(data, (LaterFingerprint, Future)):
        data = data.result() if data.done() or not at_start else None
    return {**identity, "data": data}


def compare_identity(
    path: Path,
    saved: Any,
    current: dict[str, Any],
    earlier_data: Callable[[], str] | None = None,
    at_start: bool = False,
) -> list[str]:
    """Refuse a checkpoint of another config, data or device; warn of other precision/threads.

    `earlier_data` gives the data fingerprint as earlier versions computed it, tried when the
    current one differs (a checkpoint written before the fingerprint changed). A checkpoint
    `at_start` (no step taken) may hold no data fingerprint: it continues on any data."""
    current = resolved_identity(current, at_start=False)
    if at_start and isinstance(saved, dict) and saved.get("data") is None:
        saved = {**saved, "data": current["data"]}
    saved = conform(current, saved, path, "identity")
    if saved["data"] != current["data"] and earlier_data and saved["data"] == earlier_data():
        saved = {**saved, "data": current["data"]}
    for key, what in (
        ("config", "config.json has changed since the checkpoint was written"),
        ("data", "the training or test data differ from those the run was started with"),
        (
            "device",
            f"the run was started on {saved['device']}, this resume uses {current['device']}",
        ),
    ):
        if saved[key] != current[key]:
            raise VaelabError(f"{path}: {what}; cannot resume")
    return [
        f"note: the run was started with {key} {saved[key]}, this resume uses {current[key]}; "
        "the result will not be bit-identical to an uninterrupted run"
        for key in ("precision", "threads")
        if saved[key] != current[key]
    ]


# ---------------------------------------------------------------- saving


def save_checkpoint(
    path: Path, parts: Trainables, state: TrainingState, identity: dict[str, Any]
) -> None:
    """Write the whole training state to `path` atomically (temp file, fsync, rename)."""
    tensors = {f"model/{k}": v.detach() for k, v in parts.model.state_dict().items()}
    optimizer_meta = _optimizer_tensors(parts.optimizer, tensors)
    tensors.update(_rng_tensors(parts.generator))
    if state.best is not None:
        tensors.update({f"best/{k}": v for k, v in state.best.items()})
    if state.progress is not None:
        tensors["epoch/order"] = state.progress.order
        tensors["epoch/totals"] = state.progress.totals
    meta = {
        "format": FORMAT,
        "epochs_done": state.epochs_done,
        "step": state.progress.step if state.progress else 0,
        "history": state.history,
        "optimizer": optimizer_meta,
        "scheduler": parts.scheduler.state_dict(),
        "rng": _rng_meta(),
        "identity": resolved_identity(identity, state.progress is None and not state.epochs_done),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Put the optimizer's per-parameter tensors in `tensors`; return the JSON rest."""
    state_dict = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _rng_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {
        "rng/torch": torch.get_rng_state(),
        "rng/generator": generator.get_state(),
        "rng/numpy": torch.from_numpy(_numpy_state()[1].astype(np.int64)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{index}"] = cuda_state
    return tensors


def _numpy_state() -> tuple[Any, ...]:
    """NumPy's global MT19937 state as its legacy tuple (name, keys, pos, has_gauss, cached)."""
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)
    return state


def _rng_meta() -> dict[str, Any]:
    _, _, pos, has_gauss, cached = _numpy_state()
    version, internal, gauss_next = random.getstate()
    return {
        "numpy": {"pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [version, list(internal), gauss_next],
    }


# ---------------------------------------------------------------- loading


def load_checkpoint(
    path: Path,
    parts: Trainables,
    layout: Layout,
    identity: dict[str, Any],
    earlier_data: Callable[[], str] | None = None,
) -> tuple[TrainingState, list[str]]:
    """Restore `parts` and the global RNGs from `path`; return the state and any notes.

    Everything is checked before anything is restored, so a refused file changes nothing.
    """
    tensors, metadata = read_safetensors(path)
    meta = _parse_meta(path, metadata)
    at_start = meta.get("epochs_done") == 0 and meta.get("step") == 0
    notes = compare_identity(path, meta.get("identity"), identity, earlier_data, at_start)
    state = _training_state(path, meta, tensors, layout)
    model_state = prefixed(tensors, "model/")
    check_weights(path, model_state, parts.model.state_dict())
    best = prefixed(tensors, "best/") or None
    if best is not None:
        check_weights(path, best, parts.model.state_dict())
    state.best = best
    optimizer_restored = optimizer_state(path, meta, tensors, parts.optimizer)
    scheduler_state = conform(
        parts.scheduler.state_dict(), meta.get("scheduler"), path, "scheduler"
    )
    global_step = state.epochs_done * layout.steps_per_epoch + (
        state.progress.step if state.progress else 0
    )
    if scheduler_state["last_epoch"] != global_step:
        raise VaelabError(f"{path}: scheduler is at step {scheduler_state['last_epoch']}, "
                          f"the checkpoint at step {global_step}")  # fmt: skip
    restore_rng = rng_restorer(path, meta, tensors, parts.generator)

    parts.model.load_state_dict(model_state)
    parts.optimizer.load_state_dict(optimizer_restored)
    parts.scheduler.load_state_dict(scheduler_state)
    restore_rng()
    if state.progress is not None:
        state.progress.order = state.progress.order.to(parts.generator.device)
        device = next(parts.model.parameters()).device
        state.progress.totals = state.progress.totals.to(device)
    return state, notes


def _parse_meta(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    try:
        meta = parse_json(metadata.get(METADATA_KEY, ""), path)
    except VaelabError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VaelabError(f"{path}: not a vaelab training checkpoint ({FORMAT})")
    return meta


def _training_state(
    path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], layout: Layout
) -> TrainingState:
    epochs_done = _integer(path, meta, "epochs_done", 0, layout.epochs)
    step = _integer(path, meta, "step", 0, layout.steps_per_epoch - 1)
    history = _history(path, meta.get("history"), epochs_done, layout.history_row)
    if step == 0:
        return TrainingState(epochs_done, None, history)
    if epochs_done == layout.epochs:
        raise VaelabError(f"{path}: step {step} after the last epoch")
    order, totals = tensors.get("epoch/order"), tensors.get("epoch/totals")
    n = layout.train_images
    if order is None or order.dtype != torch.int64 or order.shape != (n,):
        raise VaelabError(f"{path}: epoch/order is not a permutation of the {n} training images")
    if not torch.equal(order.sort().values, torch.arange(n)):
        raise VaelabError(f"{path}: epoch/order is not a permutation of the {n} training images")
    if totals is None or totals.dtype != torch.float32 or totals.shape != (3,):
        raise VaelabError(f"{path}: epoch/totals must be 3 float32 sums")
    if not torch.isfinite(totals).all():
        raise VaelabError(f"{path}: epoch/totals holds non-finite values")
    return TrainingState(epochs_done, EpochProgress(step, order, totals), history)


def _integer(path: Path, meta: dict[str, Any], key: str, low: int, high: int) -> int:
    value = meta.get(key)
    if type(value) is not int or not low <= value <= high:
        raise VaelabError(f"{path}: {key} must be an integer in {low}-{high}, got {value!r:.40}")
    return value


# Metrics renamed since vaelab 0.1, so that its checkpoints still resume.
_OLD_METRIC_NAMES = {"train_mse": "train_reconstruction", "test_mse": "test_reconstruction"}


def _history(path: Path, rows: Any, epochs_done: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or len(rows) != epochs_done:
        raise VaelabError(f"{path}: history must list the {epochs_done} finished epochs")
    renamed = [
        {_OLD_METRIC_NAMES.get(k, k): v for k, v in r.items()} if isinstance(r, dict) else r
        for r in rows
    ]
    return conform([row] * epochs_done, renamed, path, "history")
