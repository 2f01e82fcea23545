"""The images of one split as they are stored: uint8, uint16, bool or floats in [0, 1], held in
memory or mapped from a file, in any layout vaelab reads. They become float32 in [0, 1] one batch
at a time, on the device that uses them: memory holds the stored bytes (1 per pixel of uint8
data, none for a mapped file), never a float32 copy of the whole set.

An `Images` reads like a read-only N x D float32 tensor (D = C*H*W, channel-major): `len`,
`shape`, and indexing by an int, a slice or a list of rows return float32 tensors. The checks
(pixel range of float data) and the fingerprint run in one streaming pass over the stored type,
in blocks of `BLOCK_BYTES`.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._io import MiB
from vaelab.data.pagecache import read_at_random, will_read, will_read_rows
from vaelab.data.pixels import (
    FLOAT_TYPES,
    check_unit_range,
    pixel_storage,
    require_gather_memory,
    unit_float,
)
from vaelab.data.splits import others
from vaelab.errors import VaelabError

BLOCK_BYTES = 4 * MiB  # what a streaming pass (checks, fingerprints, binarization) holds at once
_FINGERPRINT_TAG = b"vaelab-pixels-2"

Index = int | slice | torch.Tensor | np.ndarray | Sequence[int]


class Images:
    """N images of shape (C, H, W) in their stored type; float32 in [0, 1] per batch.

    `pixels` is N x C x H x W (any strides: an N x H x W x C array is a permuted view of itself,
    not a copy), `rows` the rows of `pixels` this set is made of (a split of a larger array; None:
    all of them), `where` names them in messages, and `file` is the file they are mapped from.
    `excluded` (with no `rows`) makes the set all rows but those, listed only when first read
    (`without`).
    """

    def __init__(
        self,
        pixels: torch.Tensor,
        rows: torch.Tensor | None = None,
        where: str = "images",
        file: Path | None = None,
        checked: bool = False,
        excluded: torch.Tensor | None = None,
    ) -> None:
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be N x C x H x W, got shape {tuple(pixels.shape)}")
        self.pixels = pixels
        self._rows = None if rows is None else rows.to(torch.int64)
        self._excluded = None if rows is not None or excluded is None else excluded
        self.where = where
        self.file = file
        self._checked = checked or pixels.dtype not in FLOAT_TYPES
        if self.mapped:
            read_at_random(pixels)
        else:
            self.check()  # in memory already: checking costs one pass and nothing else

    @classmethod
    def of(
        cls, values: Images | np.ndarray | torch.Tensor, shape: tuple[int, int, int], where: str
    ) -> Images:
        """`values` (Images, or an array of N images of `shape` (C, H, W) in any shape holding
        C*H*W values per image, read in C x H x W order) as Images."""
        if isinstance(values, Images):
            if values.image_shape != tuple(shape):
                raise VaelabError(
                    f"{where}: images of shape {list(values.image_shape)}, expected {list(shape)}",
                    parameters=(where,),
                )
            return values
        tensor = pixel_storage(values, where)
        count = int(tensor.shape[0]) if tensor.ndim else 0
        per_image = math.prod(shape)
        if tensor.ndim < 1 or (count and tensor[0].numel() != per_image):
            found = tensor[0].numel() if tensor.ndim and count else tensor.numel()
            raise VaelabError(
                f"{where} have {found} values per image, image_shape {shape[1]}x{shape[2]} with "
                f"{shape[0]} channel(s) has {per_image}",
                parameters=(where, "image_shape"),
            )
        return cls(tensor.reshape(count, *shape), where=where)

    # ------------------------------------------------------------ what they are

    def __len__(self) -> int:
        if self._excluded is not None:
            return int(self.pixels.shape[0]) - len(self._excluded)
        return int(self.pixels.shape[0] if self._rows is None else self._rows.shape[0])

    @property
    def rows(self) -> torch.Tensor | None:
        """The rows of `pixels` these images are (None: all of them)."""
        if self._excluded is not None:
            self._rows = others(int(self.pixels.shape[0]), self._excluded)
            self._excluded = None
        return self._rows

    def __repr__(self) -> str:
        kind = f"mapped from {self.file}" if self.mapped else f"in memory on {self.device}"
        channels, height, width = self.image_shape
        return (
            f"Images({len(self)} x {channels}x{height}x{width} "
            f"{str(self.stored_dtype).removeprefix('torch.')}, {kind})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One image's shape, (C, H, W)."""
        channels, height, width = (int(n) for n in self.pixels.shape[1:])
        return channels, height, width

    @property
    def dim(self) -> int:
        """Values per image, D = C*H*W."""
        return math.prod(self.image_shape)

    @property
    def shape(self) -> torch.Size:
        """(N, D): the shape of the float32 tensor these images are read as."""
        return torch.Size((len(self), self.dim))

    @property
    def dtype(self) -> torch.dtype:
        """float32, the type the images are read as (`stored_dtype`: the type they are kept in)."""
        return torch.float32

    @property
    def stored_dtype(self) -> torch.dtype:
        """The type the pixels are kept in."""
        return self.pixels.dtype

    @property
    def device(self) -> torch.device:
        """Where the stored pixels are."""
        return self.pixels.device

    @property
    def mapped(self) -> bool:
        """Whether the pixels are mapped from a file rather than held in memory."""
        return self.file is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored pixels of these images."""
        return len(self) * self.dim * self.pixels.element_size()

    # ------------------------------------------------------------ reading

    def __getitem__(self, index: Index) -> torch.Tensor:
        """The images at `index` as float32 in [0, 1]: an int gives one image (D values), a
        slice or a list of rows an n x D tensor."""
        if isinstance(index, (int, np.integer)):
            return self.batch(torch.tensor([self._position(int(index))]))[0]
        return self.batch(index)

    def batch(self, index: Index, device: torch.device | str | None = None) -> torch.Tensor:
        """The images at `index` as an n x D float32 tensor in [0, 1] on `device` (else where
        they are stored): gathered in the stored type, moved, then converted there."""
        stored = self.stored(index)
        if device is not None and torch.device(device) != stored.device:
            stored = stored.to(device, non_blocking=stored.is_pinned())
        return unit_float(stored)

    def stored(self, index: Index | None = None) -> torch.Tensor:
        """The images at `index` (all by default) as an n x D tensor of the stored type."""
        self.check()
        positions = self._positions(index)
        if isinstance(positions, slice) and self.rows is None:
            block = self.pixels[positions]
            if self.mapped:
                will_read(block)
        else:
            rows = self._storage_rows(positions)
            require_gather_memory(len(rows) * self.dim * self.pixels.element_size(), self.where)
            block = self._gathered(rows)
        return block.reshape(len(block), self.dim)

    def stored_at(self, positions: torch.Tensor) -> torch.Tensor:
        """The stored pixels at `positions` (int64 in [0, N) on the pixels' device, not checked:
        a permutation's rows) as an n x D tensor. Call `check` once before."""
        rows = positions if self.rows is None else self.rows[positions]
        return self._gathered(rows).reshape(len(rows), self.dim)

    def _gathered(self, rows: torch.Tensor) -> torch.Tensor:
        """The stored pixels of `rows` of `pixels`; from a mapped file, all of the rows' reads
        are asked for before the gather waits on the first."""
        if self.mapped:
            will_read_rows(self.pixels, rows.tolist())
        return torch.index_select(self.pixels, 0, rows.to(self.pixels.device))

    def _position(self, index: int) -> int:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"image {index} of {count}")
        return index % count

    def _positions(self, index: Index | None) -> slice | torch.Tensor:
        """`index` as a slice of step 1, or as int64 positions in [0, N)."""
        if index is None:
            return slice(0, len(self))
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return slice(start, max(start, stop))
            return torch.arange(start, stop, step)
        positions = torch.as_tensor(index)
        if positions.dtype == torch.bool or positions.is_floating_point() or positions.ndim != 1:
            raise IndexError("images are indexed by an int, a slice or a 1-D list of rows")
        positions = positions.to(torch.int64)
        if len(positions):
            low, high = (int(v) for v in torch.aminmax(positions))
            if low < -len(self) or high >= len(self):
                raise IndexError(f"rows {low} to {high} of {len(self)} images")
            if low < 0:
                positions = positions % len(self)
        return positions

    def _storage_rows(self, positions: slice | torch.Tensor) -> torch.Tensor:
        if isinstance(positions, slice):
            positions = torch.arange(positions.start, positions.stop)
        if self.rows is None:
            return positions
        return self.rows[positions.to(self.rows.device)]

    def tensor(self) -> torch.Tensor:
        """All the images as one float32 N x D tensor in [0, 1] (a copy, 4 bytes per value)."""
        require_gather_memory(len(self) * self.dim * 4, self.where)
        return self.batch(slice(None))

    # ------------------------------------------------------------ subsets and copies

    def take(self, positions: torch.Tensor) -> Images:
        """The images at `positions`, sharing these pixels (nothing is copied)."""
        rows = self._storage_rows(self._positions(positions))
        return Images(self.pixels, rows, self.where, self.file, self._checked)

    def without(self, positions: torch.Tensor) -> Images:
        """All the images but those at `positions` (distinct), in their order, sharing these
        pixels. Of all the images, the rows kept are listed only when first read: a run that
        uses only its test split never makes the training split's list."""
        if self.rows is not None:
            return self.take(others(len(self), positions))
        return Images(self.pixels, None, self.where, self.file, self._checked, positions)

    def to(self, device: torch.device | str) -> Images:
        """These images with their stored pixels on `device` (in the stored type)."""
        if self.rows is None and self.pixels.device == torch.device(device):
            return self
        stored = self.stored()
        try:
            moved = stored.to(device)
        except torch.OutOfMemoryError:
            raise VaelabError(
                f"{self.where}: {self.nbytes // MiB:,} MiB of images do not fit in {device}'s "
                "memory"
            ) from None
        return Images(moved.view(len(self), *self.image_shape), None, self.where, None, True)

    def in_memory(self) -> Images:
        """These images held in memory (a mapped file read into it; others as they are)."""
        if not self.mapped:
            return self
        return Images(self.stored().view(len(self), *self.image_shape), None, self.where)

    # ------------------------------------------------------------ streaming passes

    def block_ranges(self, block_bytes: int = BLOCK_BYTES) -> Iterator[slice]:
        """Consecutive slices of positions that cover the images, `block_bytes` of pixels each."""
        per_image = max(self.dim * self.pixels.element_size(), 1)
        rows = max(block_bytes // per_image, 1)
        for start in range(0, len(self), rows):
            yield slice(start, min(start + rows, len(self)))

    def _stored_blocks(self) -> Iterator[np.ndarray | torch.Tensor]:
        """The stored pixels in blocks of `BLOCK_BYTES`, channel-major, n x D each: NumPy arrays
        on the CPU, gathered by NumPy in the calling thread alone (a pass beside training, the
        fingerprint of a run's start, takes no threads or torch buffers from it); tensors on
        other devices."""
        array = self._numpy_view()
        rows = None if self.rows is None else self.rows.cpu()
        for block in self.block_ranges():
            if array is None:
                positions = torch.arange(block.start, block.stop)
                chosen = positions if rows is None else rows[positions]
                gathered = torch.index_select(self.pixels, 0, chosen.to(self.pixels.device))
                yield gathered.reshape(len(chosen), self.dim)
            elif rows is None:
                view = array[block]
                if self.mapped:
                    will_read(view)
                yield np.ascontiguousarray(view).reshape(-1, self.dim)
            else:  # indexing, not np.take: that copies a strided array whole before taking
                chosen_rows = rows[block].numpy()
                if self.mapped:
                    will_read_rows(array, chosen_rows.tolist())
                taken = array[chosen_rows]
                yield taken.reshape(len(taken), self.dim)

    def _numpy_view(self) -> np.ndarray | None:
        """The pixels as a NumPy array sharing their memory, where NumPy can hold them."""
        if self.pixels.device.type != "cpu" or self.pixels.dtype == torch.bfloat16:
            return None
        with warnings.catch_warnings():  # a read-only mapping: nothing is written through it
            warnings.simplefilter("ignore", UserWarning)
            return self.pixels.numpy()

    def check(self) -> None:
        """Refuse (one line naming `where`) float pixels outside [0, 1], NaN or infinity: one
        pass in blocks, done once."""
        if self._checked:
            return
        lows: list[float] = []
        highs: list[float] = []
        for block in self._stored_blocks():
            if block.size if isinstance(block, np.ndarray) else block.numel():
                # min and max propagate NaN, and an infinity is one of them
                values = torch.as_tensor(block)
                block_low, block_high = (float(v) for v in torch.aminmax(values))
                lows.append(block_low)
                highs.append(block_high)
        if lows:
            nan = any(math.isnan(v) for v in lows + highs)
            check_unit_range(math.nan if nan else min(lows), math.nan if nan else max(highs),
                             self.where)  # fmt: skip
        self._checked = True

    def hash_into(self, digest: Any) -> None:
        """Feed the images to `digest`: their type, shape and stored values (floats as float32)."""
        self.check()
        header = f"{self.stored_dtype}:{len(self)}x{'x'.join(map(str, self.image_shape))}"
        digest.update(_FINGERPRINT_TAG + header.encode())
        floats = self.stored_dtype in FLOAT_TYPES
        for block in self._stored_blocks():
            if isinstance(block, torch.Tensor):
                block = block.to(torch.float32) if floats else block
                block = block.cpu().contiguous().numpy()
            elif floats:
                block = block.astype(np.float32)
            digest.update(block.data)

    def hash_floats_into(self, digest: Any) -> None:
        """Feed the images to `digest` as the float32 values a model sees, and nothing else (the
        fingerprint runs of earlier versions recorded; slower, kept to check those)."""
        self.check()
        for block in self._stored_blocks():
            digest.update(unit_float(torch.as_tensor(block)).cpu().numpy().data)

    def fingerprint(self) -> str:
        """SHA-256 of `hash_into`: what identifies these images. Computed afresh on every call:
        pixels in memory, or a mapped file, may have changed since the last."""
        digest = hashlib.sha256()
        self.hash_into(digest)
        return digest.hexdigest()


def as_readable(
    values: Images | torch.Tensor | np.ndarray, where: str = "images"
) -> Images | torch.Tensor:
    """`values` as something `read_rows` reads: Images as they are, arrays and tensors checked and
    converted to float32 in [0, 1] (`vaelab.data.dataset.as_unit_images`)."""
    if isinstance(values, Images):
        return values
    from vaelab.data.dataset import as_unit_images

    return as_unit_images(values, where)


def read_rows(
    images: Images | torch.Tensor, rows: slice, device: torch.device | str | None = None
) -> torch.Tensor:
    """The float32 images at `rows` on `device`; Images convert there, after the move."""
    if isinstance(images, Images):
        return images.batch(rows, device)
    batch = images[rows]
    return batch if device is None else batch.to(device, non_blocking=True)
