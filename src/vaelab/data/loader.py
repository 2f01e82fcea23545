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

import ctypes
import ctypes.util
import gc
import signal
from collections.abc import Generator, Iterator

import torch
from torch.utils.data import DataLoader

from vaelab._io import GiB, size_words
from vaelab._resources import cpu_count, total_memory
from vaelab.config import LOADERS
from vaelab.data.images import Images
from vaelab.data.pixels import unit_float
from vaelab.errors import VaelabError

GPU_COPY_BYTES = 1 * GiB  # a CUDA run copies images up to this size to the GPU once
PAGE_CACHE_SHARE = 0.75  # on the CPU, 'auto' streams mapped images beyond this share of memory
MAX_WORKERS = 4
PREFETCH_BATCHES = 4  # per worker


def default_workers() -> int:
    """DataLoader workers for streaming: one CPU left to the step, at least 1, at most 4."""
    return min(MAX_WORKERS, max(cpu_count() - 1, 1))


class Feed:
    """The training images and how each epoch's batches are read: by `workers` DataLoader
    workers ahead of the step, or by none (gathered in this process).

    The workers are started by `start` and kept for the whole run (a new epoch hands them its
    batches); `close` ends them. They are forked, so they read the parent's mapped images and
    pay for no pixels of their own: start them early, before the model, so that little of the
    parent's memory is copied into them as it changes.
    """

    def __init__(self, images: Images, device: torch.device, workers: int = 0) -> None:
        self.images, self.device, self.workers = images, device, workers
        self._plan = _Plan()
        self._loader: DataLoader | None = None

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

    def start(self) -> Feed:
        """Start the workers now (none when reading in this process)."""
        if self.workers and self._loader is None:
            self._loader = DataLoader(
                _StoredRows(self.images), batch_size=None, sampler=self._plan,
                num_workers=self.workers, persistent_workers=True,
                pin_memory=self.device.type == "cuda", prefetch_factor=PREFETCH_BATCHES,
                multiprocessing_context="fork", worker_init_fn=_worker_setup,
                generator=torch.Generator(),  # its seeds for the workers: not the run's RNG
            )  # fmt: skip
            gc.freeze()  # collections would write to the objects forked: copied into the workers
            for _ in self._loader:  # an empty plan: forks the workers, reads nothing
                pass
        return self

    def close(self) -> None:
        """End the workers."""
        loader, self._loader = self._loader, None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()

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
        order = order.cpu()
        self._plan.batches = [
            _batch_positions(order, step, batch_size, rows) for step in range(first_step, steps)
        ]
        loader = self.start()._loader
        assert loader is not None
        for stored in loader:
            yield unit_float(stored.to(self.device, non_blocking=stored.is_pinned()))


def _batch_positions(order: torch.Tensor, step: int, batch_size: int, rows: slice) -> torch.Tensor:
    first = step * batch_size
    return order[first + rows.start : first + rows.stop]


class _Plan(torch.utils.data.Sampler):
    """The positions of each batch of the epoch at hand, handed to the workers one by one."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _StoredRows(torch.utils.data.Dataset):
    """What a worker reads: the stored pixels at a batch's positions."""

    def __init__(self, images: Images) -> None:
        self.images = images

    def __getitem__(self, positions: torch.Tensor) -> torch.Tensor:
        return self.images.stored_at(positions)


def _worker_setup(worker_id: int) -> None:
    """Ctrl-C goes to the training process, which stops after a checkpoint and ends the workers;
    a worker that took it too would die mid-read and take the epoch with it. Batches are
    allocated with their own mappings, handed back to the system when freed: under glibc's
    moving threshold they came from the heap, which grew by ~0.5 MB a batch (160 MB over 300
    batches of 2.4 MB, measured) where the threshold is fixed it stays at ~15 MB."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _fix_mmap_threshold()


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def _fix_mmap_threshold(size: int = 128 << 10) -> None:
    """Have glibc map every allocation of `size` bytes or more on its own (nothing elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass  # not glibc


def make_feed(images: Images, device: torch.device, loader: str = "auto", workers: int = 0) -> Feed:
    """How `images` feed training on `device` under `loader`: 'memory' gathers in this process
    (images of a CUDA run are copied to the GPU once, in their stored type), 'stream' reads
    ahead with `workers` DataLoader workers (0: `default_workers()`), 'auto' streams where
    reading in this process would wait (`streams_by_default`). The images are checked first."""
    if loader not in LOADERS:
        raise VaelabError(
            f"loader must be one of {', '.join(LOADERS)}, got {loader!r}", parameters=("loader",)
        )
    images.check()
    stream = loader == "stream" or (loader == "auto" and streams_by_default(images, device))
    if stream:
        return Feed(images, device, workers or default_workers())
    on_device = images if device.type == "cpu" else images.to(device)
    return Feed(on_device, device, 0)


def streams_by_default(images: Images, device: torch.device) -> bool:
    """Whether 'auto' reads `images` with DataLoader workers: images a CUDA run cannot copy to
    its GPU once (more than `GPU_COPY_BYTES`: workers gather and pin each batch while the GPU
    computes), and images mapped from a file that on the CPU are more than `PAGE_CACHE_SHARE` of
    the machine's memory (the page cache cannot keep them: workers wait on the disk instead of
    the step). Below that, reading a mapped file in the training process is as fast as reading
    memory once its pages are cached, and costs no worker (about 50 MB each, measured)."""
    if device.type != "cpu":
        return images.nbytes > GPU_COPY_BYTES
    if not images.mapped:
        return False
    total = total_memory()
    return total is not None and images.nbytes > PAGE_CACHE_SHARE * total


def on_device(images: Images, device: torch.device) -> Images:
    """Images a run evaluates (test, validation) where its passes read them fastest: copied to
    a CUDA device once (in their stored type) when they fit in `GPU_COPY_BYTES`, else read
    batch by batch from where they are."""
    if device.type == "cpu" or images.nbytes > GPU_COPY_BYTES:
        return images
    return images.to(device)
