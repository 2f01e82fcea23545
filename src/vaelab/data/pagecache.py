"""How mapped pixels are read from a file: hints to the kernel's page cache.

A mapped file is read by page faults. By default each fault also reads the pages around it,
which suits a file read in order and ruins one read at random, where each fault then waits on
the disk in turn. So the pixels of a mapped file are marked as read at random (training
batches, test rows), the rows of a gather are all asked for before it waits on the first, and a
pass that reads a range in order (a fingerprint, a copy into memory) asks for that range ahead.
`python benchmarks/bench_scale.py --parts gather` measures a gather of 2,000 random images from a
12 GB file none of which is in the page cache, three ways.

These are hints: where the system has no `madvise` they do nothing, and a refusal changes
nothing but speed.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Sequence

import numpy as np
import torch

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_RANDOM = getattr(mmap, "MADV_RANDOM", None)
_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)


def read_at_random(pixels: torch.Tensor | np.ndarray) -> bool:
    """Mark the mapped memory of `pixels` as read at random: a page fault reads that page only.
    Whether the kernel took the hint."""
    return _advise(pixels, _RANDOM)


def will_read(pixels: torch.Tensor | np.ndarray) -> bool:
    """Ask the kernel to start reading the mapped memory of `pixels` into the page cache now.
    Whether the kernel took the hint."""
    return _advise(pixels, _WILLNEED)


def will_read_rows(pixels: torch.Tensor | np.ndarray, rows: Sequence[int]) -> None:
    """Ask the kernel to start reading the given rows of the mapped `pixels` now, all at once:
    the reads of a batch of random rows then wait on the disk together, not one after another."""
    span = None if len(pixels) == 0 else _byte_span(pixels[0])
    if _LIBC is None or _WILLNEED is None or span is None:
        return
    stride = pixels.stride(0) * pixels.element_size() if isinstance(pixels, torch.Tensor) else (
        pixels.strides[0]
    )  # fmt: skip
    low, high = span
    for row in rows:
        _madvise(low + int(row) * stride, high + int(row) * stride, _WILLNEED)


def _advise(pixels: torch.Tensor | np.ndarray, advice: int | None) -> bool:
    span = _byte_span(pixels)
    if _LIBC is None or advice is None or span is None:
        return False
    return _madvise(*span, advice)


def _madvise(low: int, high: int, advice: int) -> bool:
    """madvise over the bytes [low, high), from the start of the page holding `low`."""
    assert _LIBC is not None
    start = low - low % mmap.PAGESIZE
    return _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(high - start), advice) == 0


def _byte_span(pixels: torch.Tensor | np.ndarray) -> tuple[int, int] | None:
    """The first and one-past-last byte addresses `pixels` covers (None: empty, or not in host
    memory)."""
    if isinstance(pixels, torch.Tensor):
        if pixels.device.type != "cpu" or pixels.numel() == 0:
            return None
        start = pixels.data_ptr()
        extent = sum((size - 1) * stride for size, stride in zip(pixels.shape, pixels.stride()))
        return start, start + (extent + 1) * pixels.element_size()
    if pixels.size == 0:
        return None
    low, high = np.lib.array_utils.byte_bounds(pixels)
    return int(low), int(high)
