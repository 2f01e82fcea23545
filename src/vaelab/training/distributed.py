"""Devices and ranks: data-parallel training on PyTorch's own engine (torchrun starts the ranks,
DDP syncs the gradients), and the device a config's name resolves to.

Every rank draws the same permutation and the same noise as a single process would (one shared
seed), takes its contiguous share of each global batch, and DistributedDataParallel averages the
gradients. With equal shares, that average is the gradient of the whole batch's mean loss, so N
ranks follow the single-process run up to floating-point rounding.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vaelab._bounds import require_whole
from vaelab.errors import VaelabError
from vaelab.models import VAE, LossTerms

DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 24 * 3600  # a day: a rank that silent is gone


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; a single process is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several ranks train together."""
        return self.size > 1 or dist.is_initialized()


SINGLE_PROCESS = World()


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda' without a CUDA device is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError(
            "device cuda was asked for but no CUDA device is available", parameters=("device",)
        )
    return torch.device(name)


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.launch) set these for every rank."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_main_process() -> bool:
    """Rank 0, or not launched by torchrun: the process that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def init_world(device: torch.device, timeout_s: int = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group when started by torchrun: nccl on CUDA, gloo on the CPU.

    Collectives time out after `timeout_s`, so a rank that dies makes the others fail with a
    clear error instead of waiting forever.
    """
    check_timeout(timeout_s)
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank=rank, size=size, local_rank=local_rank)


def check_timeout(timeout_s: int) -> None:
    """Refuse a rank timeout that is not a whole number of seconds from 1 to MAX_TIMEOUT_S."""
    require_whole("dist_timeout_s", timeout_s, 1, MAX_TIMEOUT_S)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank's own GPU (LOCAL_RANK) when training on CUDA."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" else device


def close_world(world: World) -> None:
    """Leave the process group, if this process joined one."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def check_divisible(batch_size: int, world: World) -> None:
    """Refuse a global batch that the ranks cannot share equally."""
    if batch_size % world.size:
        raise VaelabError(
            f"batch_size {batch_size} is the global batch and must divide evenly among "
            f"{world.size} ranks",
            parameters=("batch_size",),
        )


def local_rows(global_batch: int, world: World) -> slice:
    """This rank's contiguous share of a global batch."""
    share = global_batch // world.size
    return slice(world.rank * share, (world.rank + 1) * share)


class TrainingObjective(nn.Module):
    """The model's training loss as a module's forward, so that DDP can wrap it."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> LossTerms:
        """`VAE.loss` of the wrapped model, with the same arguments."""
        return self.model.loss(*args, **kwargs)


def wrap(model: VAE, world: World) -> nn.Module:
    """DistributedDataParallel over the training objective; the plain objective for one rank."""
    objective = TrainingObjective(model)
    if not world.distributed:
        return objective
    device_ids = [world.local_rank] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)


def mean_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The average of `values` over all ranks (a copy; `values` is left as it is)."""
    if not world.distributed:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world.size


def barrier(world: World) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world.distributed:
        dist.barrier()


def lost_ranks_message(world: World, run_dir: str | Path | None, error: Exception) -> str:
    """One line for a collective that failed: another rank died or stopped answering."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kept = ""
    if run_dir is not None:
        kept = f"; the last checkpoint in {run_dir} is kept (resume=True continues it)"
    return (
        f"rank {world.rank} of {world.size}: lost contact with the other ranks (one stopped or "
        f"timed out: {detail[:200]}){kept}"
    )
