"""The memory a training run needs, estimated from its config before anything is built.

A run keeps its weights, their gradients and Adam's two moments for its whole length; on top of
them, at any one time, it holds one of: a training step's activations (forward and backward), a
test or validation batch's forward pass, or the copies made while a checkpoint is written. The
activations are measured by running the model's loss on PyTorch's meta device (shapes, no memory)
and adding up every tensor each operation creates, none freed: an upper bound of what is alive at
once. `check_memory` refuses, in one line with the figures, a run that would not fit in the memory
the device has free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch.fx.experimental import _config as fx_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vaelab._io import size_words
from vaelab._resources import available_memory, not_enough
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import VaelabError
from vaelab.models import VAE, build_model
from vaelab.models.vae import check_model_size

FP32 = 4
# Per weight, for the whole run: the weight, its gradient and Adam's two moments, in fp32.
STATE_BYTES = 4 * FP32
# Adam's first step creates torch's own moments before they are gathered into the flat buffers
# the hand-written step updates (training/flat_adam.py): two more per weight for that step.
FIRST_STEP_BYTES = 2 * FP32
# safetensors' `save` copies each tensor into bytes, then serialises them into a buffer that is
# copied again into the Python bytes written to the file: three copies alive at once.
CHECKPOINT_COPIES = 3
# Kernels' scratch space, the allocator's slack and the objects a run makes beside its tensors,
# measured on tiny runs (tests/test_footprint.py).
OVERHEAD_BYTES = 64 << 20
# What the refusal suggests changing, in the API's words (the CLI shows each as its flag).
KNOBS = ("hidden", "batch_size", "test_batch_size", "train_samples")


class Footprint(NamedTuple):
    """Bytes a training run needs: `state` for all of it, and at most one of the others at once."""

    weights: int  # how many
    state: int  # the weights, gradients, Adam's moments (and the best epoch's copy)
    train_step: int  # one training step's activations, forward and backward
    test_batch: int  # one test (or validation) batch's forward pass
    checkpoint: int  # the copies made while a checkpoint is written

    @property
    def peak(self) -> int:
        """The most memory the run needs at once, in bytes, when all of it is in one memory."""
        return self.state + max(self.train_step, self.test_batch, self.checkpoint) + OVERHEAD_BYTES

    @property
    def device_peak(self) -> int:
        """The most a GPU holds at once: checkpoints are copied out to the CPU's memory."""
        return self.state + max(self.train_step, self.test_batch) + OVERHEAD_BYTES


def estimate_footprint(
    config: RunConfig, test_rows: int | None = None, saves: bool = True
) -> Footprint:
    """The memory a run of `config` needs, from shapes alone (nothing is allocated).

    `test_rows` is the largest test or validation batch (default `test_batch_size`); `saves`
    whether checkpoints are written (a run with a directory)."""
    check_model_size(config.model)
    with torch.device("meta"):
        built = build_model(config.model)
        model = build_model(_traceable(config.model)) if config.model.conditional else built
    weights = sum(p.numel() for p in built.parameters())
    best = weights * FP32 if config.data.val_split else 0  # the best epoch's weights, set aside
    bf16 = weights * 2 if config.train.precision != "32" else 0  # bf16-mixed's copy of the weights
    saved = weights * 3 * FP32 + best  # a checkpoint's tensors: weights, Adam's moments, best
    rows = config.train.batch_size
    test_rows = min(config.train.test_batch_size, test_rows or config.train.test_batch_size)
    per_image = _condition_bytes(config.model)
    drawn = 2 * FP32 * config.model.input_dim if config.data.binarize == "dynamic" else 0
    return Footprint(
        weights=weights,
        state=weights * STATE_BYTES + best + bf16,
        train_step=_step_bytes(model, config, rows) + (per_image + drawn) * rows
        + weights * FIRST_STEP_BYTES,
        test_batch=_test_bytes(model, test_rows) + per_image * test_rows,
        checkpoint=CHECKPOINT_COPIES * saved if saves else 0,
    )  # fmt: skip


def given_model_footprint(model: VAE, saves: bool = True) -> Footprint:
    """The memory training a model already built needs beyond its weights: gradients, Adam's
    moments and checkpoints (the activations of networks of the user's own are not known)."""
    weights = sum(p.numel() for p in model.parameters())
    return Footprint(
        weights=weights,
        state=weights * (STATE_BYTES - FP32),
        train_step=weights * FIRST_STEP_BYTES,
        test_batch=0,
        checkpoint=CHECKPOINT_COPIES * weights * 3 * FP32 if saves else 0,
    )


def check_memory(footprint: Footprint, device: torch.device) -> None:
    """Refuse in one line a run whose `footprint` does not fit in `device`'s free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        _require(footprint.device_peak, free, f"memory of {device}", footprint)
        _require(footprint.checkpoint, available_memory(), "memory", footprint)
    else:
        _require(footprint.peak, available_memory(), "memory", footprint)


def _require(needed: int, available: int | None, where: str, footprint: Footprint) -> None:
    if available is None or needed <= available:
        return
    parts = (
        f"{size_words(footprint.state)} for {footprint.weights:,} weights with their gradients "
        f"and Adam's moments, {size_words(footprint.train_step)} for a training step's "
        f"activations, {size_words(footprint.test_batch)} for a test batch"
    )
    refusal = not_enough(f"training ({parts})", needed, available, where)
    raise VaelabError(
        f"{refusal}; choose a smaller hidden, batch_size, test_batch_size or train_samples",
        parameters=KNOBS,
    )


def check_test_memory(config: RunConfig, rows: int) -> None:
    """Refuse in one line a test pass (`vaelab evaluate`) whose batches of `rows` images would not
    fit in the free memory, before any is run; the model's weights are loaded already."""
    available = available_memory()
    if available is None:
        return
    with torch.device("meta"):
        model = build_model(_traceable(config.model))
    needed = _test_bytes(model, rows) + _condition_bytes(config.model) * rows + OVERHEAD_BYTES
    if needed <= available:
        return
    refusal = not_enough(
        f"a test batch of {rows:,} (the run's test_batch_size is {config.train.test_batch_size:,})",
        needed,
        available,
        "memory",
    )
    # `images` is the only word here the command line shows as its flag (--images)
    raise VaelabError(f"{refusal}; evaluate fewer of them with images", parameters=("images",))


class _Allocations(TorchDispatchMode):
    """Adds up the bytes of every tensor the operations run under it create (views and in-place
    results excluded: they share memory that was counted when it was made)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not any(result.alias_info is not None for result in func._schema.returns):
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    self.bytes += value.numel() * value.element_size()
        return out


def _traceable(config: ModelConfig) -> ModelConfig:
    """The model traced for its activations: a conditional model's class, which the meta device
    cannot check, is left out (`_condition_bytes` adds its inputs back)."""
    return replace(config, conditional=False) if config.conditional else config


def _condition_bytes(config: ModelConfig) -> int:
    """Per image, the one-hot class inputs a conditional model adds (encoder, decoder; forward
    and backward)."""
    if not config.conditional:
        return 0
    _, height, width = config.shape
    planes = height * width if config.arch == "conv" else 1
    return 2 * FP32 * config.classes * (planes + 1)


def _step_bytes(model: VAE, config: RunConfig, rows: int) -> int:
    """Bytes a training step of `rows` images allocates on top of the run's state."""
    samples = config.train.train_samples
    model.train()

    def step() -> None:
        batch = torch.empty(rows, model.config.input_dim, device="meta")
        noise = torch.empty(samples, rows, model.noise_dim, device="meta")
        model.loss(batch, noise=noise, objective=config.train.objective).loss.backward()

    gradients = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(_traced_bytes(step) - gradients, 0)  # the gradients are part of the state


def _test_bytes(model: VAE, rows: int) -> int:
    """Bytes a test batch of `rows` images allocates (no gradients)."""
    model.eval()

    def forward() -> None:
        batch = torch.empty(rows, model.config.input_dim, device="meta")
        model.loss(batch, noise=torch.empty(rows, model.noise_dim, device="meta"))

    with torch.no_grad():
        return _traced_bytes(forward)


def _traced_bytes(run: Callable[[], None]) -> int:
    """Bytes the tensors `run` creates on the meta device. An operation whose output size
    depends on the values (a boolean mask's selection) is counted as keeping every element, an
    upper bound; one the meta device cannot run at all (a value read back) leaves the
    activations unknown, counted as 0: the run then relies on the allocation failure's one
    line (`vaelab.cli`) instead of a refusal up front."""
    with (
        fx_config.patch(meta_nonzero_assume_all_nonzero=True),  # type: ignore[attr-defined]
        _Allocations() as counted,
    ):
        try:
            run()
        except (NotImplementedError, RuntimeError, TypeError, ValueError):
            return 0
    return counted.bytes
