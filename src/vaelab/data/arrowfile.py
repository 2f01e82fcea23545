"""Parquet and Arrow sources, Hugging Face `datasets` among them (``vaelab[arrow]``: pyarrow).

Where the rows are (files, splits) is `vaelab.data.arrowlayout`'s part, and the files themselves
`vaelab.data.arrowtable`'s; this module decodes the images a batch at a time, as an image file is
decoded (`vaelab.data.imagefile`: modes, alpha, resizing to `DataConfig.image_size`), straight
into the prepared .npy file, so that memory does not grow with the dataset. Neither `datasets`
nor any reader but pyarrow is imported.

The image column is the one the Hugging Face metadata marks as an ``Image`` (a struct of
``bytes`` and ``path``), else the only column of encoded image bytes (that struct, or binary);
`DataConfig.columns` names it instead. The labels are a ``ClassLabel`` column (its names become
the class names), else an integer column named ``label`` or ``labels``, else unlabelled; the
second name of `DataConfig.columns` names them instead. An image stored as a path without its
bytes is refused: vaelab reads what the files hold, so that a prepared copy is fresh while they
are unchanged.

Reads are bounded as an image folder's are: each encoded image and each decoded image by the read
limit (``$VAELAB_MAX_READ_BYTES``, default 4 GiB), each Parquet row group read by it too, and all
the decoded images by the free disk (prepared) or the read limit (in memory); `image_size` is
bounded the same way before any image is decoded (`vaelab.data.imagefile.check_resized`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._extras import require_extra
from vaelab._io import FILE_LIMIT, read_limit, size_words, too_large
from vaelab.config import DataConfig
from vaelab.data.arrowlayout import Split, source_files, source_splits
from vaelab.data.arrowtable import Columns, Table
from vaelab.data.imagefile import check_resized, decode_bytes, open_npy, strict_decoding
from vaelab.data.layout import ImageSet, SourceSets, label_tensor, note
from vaelab.errors import VaelabError

Progress = Callable[[int], None] | None


def arrow_files(path: Path, test: Path | None) -> list[Path]:
    """The files a Parquet or Arrow source is read from (for the prepared copy's freshness)."""
    require_extra("arrow", "pyarrow")
    return source_files(path, test)


def arrow_rows(path: Path, test: Path | None) -> int:
    """The rows (images) of the training and test splits of a source."""
    require_extra("arrow", "pyarrow")
    return sum(_rows(split) for split in source_splits(path, test) if split is not None)


def read_arrow(
    path: Path, test: Path | None, config: DataConfig, out: Path | None = None,
    progress: Progress = None,
) -> SourceSets:  # fmt: skip
    """The decoded sets of a Parquet or Arrow source: in memory, or written into the .npy file
    `out` (training images first) and mapped from it. `progress` is told the images decoded."""
    require_extra("arrow", "pyarrow")
    train, held = source_splits(path, test, tell_unread=True)
    splits = [split for split in (train, held) if split is not None]
    columns = Columns.of(Table(train.files[0]), config)
    counts = [_rows(split) for split in splits]
    size = tuple(config.image_size) if config.image_size else None
    check_resized(sum(counts), size, path, out)
    reader = _Reader(columns, config, size, _Pixels(sum(counts), out, path), progress)
    with strict_decoding():
        labels = [reader.split(split) for split in splits]
    pixels = reader.finish()
    sets, start = [], 0
    for split, count, split_labels in zip(splits, counts, labels):
        where = str(split.where)
        label_values = None
        if split_labels is not None:
            label_values = label_tensor(split_labels, count, f"{where} ({columns.label})", where)
        sets.append(ImageSet(pixels[start : start + count], label_values, where, file=out))
        start += count
    source = str(path) if test is None else f"{path} (test: {test})"
    kind = "parquet" if train.files[0].suffix.lower() == ".parquet" else "arrow"
    return SourceSets(sets[0], sets[1] if len(sets) > 1 else None, source, kind, columns.names)


def _rows(split: Split) -> int:
    count = sum(Table(file).rows() for file in split.files)
    if count == 0:
        raise VaelabError(f"{split.where}: no rows, so no images")
    return count


class _Reader:
    """Decodes the rows of splits in turn into `pixels`, and gathers their labels."""

    def __init__(
        self, columns: Columns, config: DataConfig, size: tuple[int, ...] | None,
        pixels: _Pixels, progress: Progress,
    ) -> None:  # fmt: skip
        self.columns, self.config, self.size = columns, config, size
        self.pixels, self.progress = pixels, progress
        self.limit = read_limit(FILE_LIMIT)
        self.alpha_first: str | None = None  # the first image with an alpha channel
        self.alpha_count = 0

    def split(self, split: Split) -> np.ndarray | None:
        """Decode the images of `split`; its labels, or None when unlabelled."""
        labels: list[np.ndarray] = []
        for file in split.files:
            columns = Columns.of(Table(file), self.config, first=self.columns)
            row = 0
            for batch in Table(file).batches(columns.read):
                self._images(batch.column(0), file, row)
                if columns.label is not None:
                    labels.append(_labels(batch.column(1), file, row))
                row += batch.num_rows
                if self.progress is not None:
                    self.progress(batch.num_rows)
        return None if self.columns.label is None else np.concatenate(labels)

    def _images(self, column: Any, file: Path, row: int) -> None:
        import pyarrow as pa

        struct = pa.types.is_struct(column.type)
        encoded_images = (column.field("bytes") if struct else column).to_pylist()
        valid = column.is_valid().to_pylist()  # a struct's own nulls are not its fields'
        for i, encoded in enumerate(encoded_images):
            where = f"{file} row {row + i}"
            if encoded is None or not valid[i]:
                raise _no_image(column, i, where)
            if len(encoded) > self.limit:
                what = f"the encoded image ({size_words(len(encoded))})"
                raise too_large(where, what, self.limit)
            array, alpha = decode_bytes(encoded, where, self.size, self.limit)
            self.pixels.put(array, where)
            if alpha:
                self.alpha_count += 1
                self.alpha_first = self.alpha_first or where

    def finish(self) -> torch.Tensor:
        """The images decoded, after saying how many had an alpha channel."""
        if self.alpha_first is not None:
            note(
                f"{self.pixels.root}: {self.alpha_count} image(s) have an alpha channel (e.g. "
                f"{self.alpha_first}); it is dropped"
            )
        return self.pixels.finish()


def _no_image(column: Any, index: int, where: str) -> VaelabError:
    import pyarrow as pa

    stored = None
    if pa.types.is_struct(column.type) and column.is_valid()[index].as_py():
        with contextlib.suppress(pa.ArrowException, KeyError, ValueError):  # a path unreadable
            stored = column.field("path")[index].as_py()
    if stored:
        return VaelabError(
            f"{where}: the image is a path ({str(stored)[:120]}) without its bytes; vaelab reads "
            "the images the files hold (datasets' save_to_disk stores them in its files)"
        )
    return VaelabError(f"{where}: no image (null)")


def _labels(column: Any, file: Path, row: int) -> np.ndarray:
    """A batch's labels as int64, refused in one line when one is missing or negative."""
    if column.null_count:
        first = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise VaelabError(
            f"{file} row {row + first}: no label (null); give every image one, or ignore the "
            "labels (labels=False)",
            parameters=("labels",),
        )
    values = column.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(values) and int(values.min()) < 0:
        first = int(np.argmax(values < 0))
        missing = " (datasets' mark of a missing label)" if values[first] == -1 else ""
        raise VaelabError(
            f"{file} row {row + first}: label {values[first]}{missing}; labels are class indices "
            "0, 1, ...: give every image one, or ignore the labels (labels=False)",
            parameters=("labels",),
        )
    return values


class _Pixels:
    """Decoded images, one after another: in the .npy file `out` (mapped), else in memory within
    the read limit. The first image fixes the shape of all (each must have it, or one line says
    which differs), so nothing is held per image."""

    def __init__(self, count: int, out: Path | None, root: Path) -> None:
        self.count, self.out, self.root = count, out, root
        self.array: np.ndarray | None = None
        self.first = ""
        self.done = 0

    def put(self, image: np.ndarray, where: str) -> None:
        """Write the C x H x W uint8 `image` next."""
        if self.array is None:
            self.array, self.first = self._allocate(image.shape), where
        elif image.shape != self.array.shape[1:]:
            raise _unlike(image.shape, where, self.array.shape[1:], self.first)
        if self.done >= self.count:
            raise VaelabError(f"{where}: more rows than counted (was the file changed meanwhile?)")
        self.array[self.done] = image
        self.done += 1

    def _allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        full = (self.count, *shape)
        if self.out is not None:
            return open_npy(self.out, full, self.root)
        limit, needed = read_limit(FILE_LIMIT), math.prod(full)
        if needed > limit:
            what = f"{self.count:,} images of {_shape(shape)} decoded ({size_words(needed)})"
            raise too_large(self.root, what, limit)
        return np.empty(full, dtype=np.uint8)

    def finish(self) -> torch.Tensor:
        """All the images, N x C x H x W."""
        if self.array is None or self.done != self.count:
            raise VaelabError(
                f"{self.root}: {self.done:,} images read of the {self.count:,} rows counted (was a "
                "file changed meanwhile?)"
            )
        if isinstance(self.array, np.memmap):
            self.array.flush()
        return torch.from_numpy(self.array)


def _unlike(
    shape: tuple[int, ...], where: str, first: tuple[int, ...], first_where: str
) -> VaelabError:
    if shape[1:] != first[1:]:
        return VaelabError(
            f"{where}: an image of {_shape(shape)}, but the first ({first_where}) is "
            f"{_shape(first)}; give image_size to resize them all to one",
            parameters=("image_size",),
        )
    return VaelabError(
        f"{where}: a {_mode(shape)} image, but the first ({first_where}) is {_mode(first)}; "
        "convert them to one mode (all greyscale or all RGB)"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}"


def _mode(shape: tuple[int, ...]) -> str:
    return "greyscale" if shape[0] == 1 else "RGB"
