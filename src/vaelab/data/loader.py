"""How training batches reach the step: gathered in the training process from images in memory
(or from a mapped file small enough to stay in the page cache), or read ahead by torch
`DataLoader` workers from a large mapped file.

Both give the same batches in the same order: the epoch's permutation (drawn from the run's
generator, so that resume is bit for bit) cut into batches, and of each batch only this rank's
rows (under torchrun each rank reads its share and nothing else). Workers gather stored pixels
(uint8 stays uint8, pinned when the step runs on CUDA) and the training process converts each
batch to float32 on the device that trains.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from vaelab._io import GiB, size_words
from vaelab._resources import cpu_count
from vaelab.config import LOADERS
from vaelab.data.images import Images, unit_float
from vaelab.errors import VaelabError

IN_PROCESS_BYTES = 1 * GiB  # 'auto' streams mapped data larger than this
MAX_WORKERS = 4
PREFETCH_BATCHES = 4  # per worker


def default_workers() -> int:
    """DataLoader workers for streaming: one CPU left to the step, at least 1, at most 4."""
    return min(MAX_WORKERS, max(cpu_count() - 1, 1))


@dataclass(frozen=True)
class Feed:
    """The training images and how each epoch's batches are read: `workers` DataLoader workers
    ahead of the step, or none (gathered in this process)."""

    images: Images
    device: torch.device
    workers: int = 0

    def describe(self) -> str:
        """One line for the start of a run: what is read, from where, and by whom."""
        from vaelab.data.prepared import PREPARED_HERE, cache_root

        kind = str(self.images.stored_dtype).removeprefix("torch.")
        file = self.images.file
        held = f"in {'memory' if self.images.device.type == 'cpu' else self.images.device}"
        if file is not None and file.parent.parent == cache_root():
            when = "prepared now" if file in PREPARED_HERE else "prepared earlier"
            held = f"mapped from the copy {when} in {file.parent}"
        elif file is not None:
            held = f"mapped from {file}"
        how = (
            f"read ahead by {self.workers} DataLoader worker{'s' if self.workers > 1 else ''}"
            if self.workers
            else "read in this process"
        )
        return (
            f"data: {len(self.images):,} training images ({size_words(self.images.nbytes)} of "
            f"{kind}) {held}, {how}"
        )

    def epoch(
        self, order: torch.Tensor, rows: slice, batch_size: int, first_step: int, steps: int
    ) -> Generator[torch.Tensor, None, None]:
        """The float32 batches of steps `first_step` to `steps` - 1 of the epoch whose
        permutation is `order`: of batch s, the positions order[s * batch_size + rows]."""
        if not self.workers:
            for step in range(first_step, steps):
                stored = self.images.stored_at(_batch_positions(order, step, batch_size, rows))
                yield unit_float(stored if stored.device == self.device else stored.to(self.device))
            return
        batches = _EpochBatches(self.images, order.cpu(), rows, batch_size, first_step, steps)
        loader = DataLoader(
            batches, batch_size=None, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=PREFETCH_BATCHES,
            multiprocessing_context="fork", worker_init_fn=_quiet_worker,
        )  # fmt: skip
        for stored in loader:
            yield unit_float(stored.to(self.device, non_blocking=stored.is_pinned()))


def _batch_positions(order: torch.Tensor, step: int, batch_size: int, rows: slice) -> torch.Tensor:
    first = step * batch_size
    return order[first + rows.start : first + rows.stop]


class _EpochBatches(torch.utils.data.Dataset):
    """The stored pixels of each remaining step of one epoch: item i is step first_step + i."""

    def __init__(
        self, images: Images, order: torch.Tensor, rows: slice, batch_size: int, first_step: int,
        steps: int,
    ) -> None:  # fmt: skip
        self.images, self.order, self.rows = images, order, rows
        self.batch_size, self.first_step, self.steps = batch_size, first_step, steps

    def __len__(self) -> int:
        return self.steps - self.first_step

    def __getitem__(self, index: int) -> torch.Tensor:
        positions = _batch_positions(
            self.order, self.first_step + index, self.batch_size, self.rows
        )
        return self.images.stored_at(positions)


def _quiet_worker(worker_id: int) -> None:
    """Ctrl-C goes to the training process, which stops after a checkpoint and ends the workers;
    a worker that took it too would die mid-read and take the epoch with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_feed(images: Images, device: torch.device, loader: str = "auto", workers: int = 0) -> Feed:
    """How `images` feed training on `device` under `loader`: 'memory' gathers in this process
    (images of a CUDA run are copied to the GPU once, in their stored type), 'stream' reads
    ahead with `workers` DataLoader workers (0: `default_workers()`), 'auto' streams mapped
    images of more than `IN_PROCESS_BYTES` and gathers the rest. The images are checked first."""
    if loader not in LOADERS:
        raise VaelabError(
            f"loader must be one of {', '.join(LOADERS)}, got {loader!r}", parameters=("loader",)
        )
    images.check()
    stream = loader == "stream" or (
        loader == "auto" and images.mapped and images.nbytes > IN_PROCESS_BYTES
    )
    if stream:
        return Feed(images, device, workers or default_workers())
    on_device = images if device.type == "cpu" else images.to(device)
    return Feed(on_device, device, 0)


def on_device(images: Images, device: torch.device) -> Images:
    """Images a run evaluates (test, validation) where its passes read them fastest: copied to
    a CUDA device once (in their stored type) when they fit in `IN_PROCESS_BYTES`, else read
    batch by batch from where they are."""
    if device.type == "cpu" or images.nbytes > IN_PROCESS_BYTES:
        return images
    return images.to(device)
