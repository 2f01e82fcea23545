"""What the readers of users' own images share: the layout of an image array (where its channel
axis is), checks of labels, and the assembly of a `Dataset` from a training set and a test set
(or a seeded split of the training set when there is none).

A note (an alpha channel dropped, files not read, test images also in the training set) goes to
the ``vaelab.data`` logger at WARNING level, once per read; without logging configured, Python
prints it on stderr, where a command-line user sees it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset, class_names_for
from vaelab.data.images import Images
from vaelab.data.pixels import narrow_range_note, pixel_storage
from vaelab.data.splits import held_out, others
from vaelab.errors import VaelabError, one_line

log = logging.getLogger("vaelab.data")

CHANNEL_SIZES = (1, 3, 4)  # grey, RGB, RGBA (alpha dropped)
MAX_CLASSES = 100_000  # a label above this is a mistake (it would name that many classes)
_LAYOUTS = "N x H x W, N x H x W x C or N x C x H x W (C = 1, 3 or 4)"


_KEPT: list[list[str] | None] = []  # the lists of `notes_kept`, innermost last (None: quiet)


def note(text: str) -> None:
    """Tell the user something they should know about their data, without stopping."""
    if _KEPT and _KEPT[-1] is None:
        return
    for kept in _KEPT:
        if kept is not None:
            kept.append(text)
    log.warning("note: %s", one_line(text))  # one line, whatever the paths it names hold


@contextmanager
def notes_kept(quiet: bool = False) -> Iterator[list[str]]:
    """The notes given inside, kept in the list yielded as they are told; `quiet` tells none
    (a source listed only to stamp its files, its notes told when it is read)."""
    kept: list[str] = []
    _KEPT.append(None if quiet else kept)
    try:
        yield kept
    finally:
        _KEPT.pop()


_SHARED_UNTOLD: list[bool] = []  # inside `shared_untold`: no note of test images in training


@contextmanager
def shared_untold() -> Iterator[None]:
    """Datasets built inside say nothing of test images that are also training images: for a
    caller whose test set is the training set on purpose (the explorer shows the images given)."""
    _SHARED_UNTOLD.append(True)
    try:
        yield
    finally:
        _SHARED_UNTOLD.pop()


@dataclass(frozen=True)
class ImageSet:
    """Images of one split as read: N x C x H x W pixels (a view of the stored array, in its
    type), labels or None, where they came from, and whether an alpha channel was dropped from
    them (said once, for both splits)."""

    pixels: torch.Tensor
    labels: torch.Tensor | None
    where: str
    alpha_dropped: bool = False
    labels_where: str | None = None  # the labels' own file, when they have one
    file: Path | None = None  # the file the pixels are mapped from

    def images(self) -> Images:
        """The pixels as `Images` (checked now when in memory, on first use when mapped)."""
        return Images(self.pixels, where=self.where, file=self.file)

    @classmethod
    def of_grey(
        cls, pixels: np.ndarray, labels: np.ndarray | None, where: str, labels_where: str | None
    ) -> ImageSet:
        """One channel of uint8 images read as N x H x W, with int labels or None."""
        tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))[:, None]
        label_tensor = None if labels is None else torch.from_numpy(labels.astype(np.int64))
        return cls(tensor, label_tensor, where, labels_where=labels_where)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape, (C, H, W)."""
        channels, height, width = self.pixels.shape[1:]
        return int(channels), int(height), int(width)


def pixel_tensor(values: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    """`values` as a tensor sharing their memory (a memory-mapped array stays mapped), refused
    in one line unless it holds pixels (`vaelab.data.pixels.PIXEL_TYPES`). The range of float
    pixels is checked when they become `Images`."""
    return pixel_storage(values, where)


def channel_major(
    pixels: torch.Tensor, where: str, image_size: tuple[int, ...] = ()
) -> tuple[torch.Tensor, bool]:
    """Images of any layout vaelab takes as N x C x H x W, and whether an alpha channel was dropped.

    N x D is a square grey image each, or C x H x W in that order when `image_size` (H, W) is
    given; N x H x W is grey; in N x A x B x C the channel axis is the one of size 1, 3 or 4
    (4: RGBA, alpha dropped). A shape where both ends could be channels is refused unless
    `image_size` says which; images of another size than `image_size` are refused (arrays are
    not resized).
    """
    shape = tuple(int(n) for n in pixels.shape)
    if pixels.ndim == 2:
        pixels = _unflatten(pixels, where, image_size)
    elif pixels.ndim == 3:
        pixels = pixels[:, None]
    elif pixels.ndim == 4:
        pixels = _channel_axis(pixels, where, image_size)
    else:
        raise VaelabError(f"{where}: images of shape {list(shape)}; vaelab takes {_LAYOUTS}")
    channels, height, width = (int(n) for n in pixels.shape[1:])
    if channels not in CHANNEL_SIZES:
        raise VaelabError(f"{where}: images of {channels} channels; vaelab takes 1, 3 or 4")
    if image_size and (height, width) != tuple(image_size):
        raise VaelabError(
            f"{where}: images are {height}x{width}, image_size says {_size(image_size)}; arrays "
            "are not resized (only image folders are)",
            parameters=("image_size",),
        )
    if channels == 4:
        return pixels[:, :3], True
    return pixels, False


def _unflatten(pixels: torch.Tensor, where: str, image_size: tuple[int, ...]) -> torch.Tensor:
    count, values = (int(n) for n in pixels.shape)
    if image_size:
        height, width = image_size
        channels = values // (height * width)
        if channels * height * width != values or channels not in CHANNEL_SIZES:
            raise VaelabError(
                f"{where}: images of {values} values are not 1, 3 or 4 channels of "
                f"{_size(image_size)} (image_size)",
                parameters=("image_size",),
            )
        return pixels.reshape(count, channels, height, width)
    side = math.isqrt(values)
    if side * side != values:
        raise VaelabError(
            f"{where}: images of {values} values each are not square; give image_size (H, W), "
            "or the images as N x H x W",
            parameters=("image_size",),
        )
    return pixels.reshape(count, 1, side, side)


def _channel_axis(pixels: torch.Tensor, where: str, image_size: tuple[int, ...]) -> torch.Tensor:
    _, a, b, c = (int(n) for n in pixels.shape)
    readings = []  # (channels last?, (H, W))
    if c in CHANNEL_SIZES:
        readings.append((True, (a, b)))
    if a in CHANNEL_SIZES:
        readings.append((False, (b, c)))
    if image_size:
        readings = [r for r in readings if r[1] == tuple(image_size)] or readings[:1]
    shape = f"{len(pixels)}x{a}x{b}x{c}"
    if not readings:
        raise VaelabError(
            f"{where}: images of shape {shape} have no channel axis of 1, 3 or 4 (grey, RGB, "
            f"RGBA); vaelab takes {_LAYOUTS}"
        )
    if len(readings) > 1:
        raise VaelabError(
            f"{where}: images of shape {shape} are ambiguous (channels last: {a}x{b} with {c} "
            f"channels; first: {b}x{c} with {a}); give image_size (H, W) to say which, or the "
            "images as N x D in C x H x W order with image_size",
            parameters=("image_size",),
        )
    last, _ = readings[0]
    return pixels.permute(0, 3, 1, 2) if last else pixels


def label_tensor(
    values: np.ndarray | torch.Tensor, count: int, where: str, images_where: str = "the images"
) -> torch.Tensor:
    """Labels as int64 class indices, one per image; anything else is one line naming `where`."""
    if isinstance(values, torch.Tensor):
        labels = values.detach()
        integer = not (labels.is_floating_point() or labels.is_complex())
        integer = integer and labels.dtype != torch.bool
    else:
        array = np.asarray(values)
        integer = array.dtype.kind in "iu"
        labels = torch.from_numpy(array.astype(np.int64)) if integer else torch.empty(0)
    if not integer:
        kind = values.dtype if hasattr(values, "dtype") else type(values).__name__
        raise VaelabError(f"{where}: labels must be integer class indices, got {kind}")
    shape = tuple(int(n) for n in labels.shape)
    if shape != (count,):
        got = f"{shape[0]} labels" if len(shape) == 1 else f"labels of shape {list(shape)}"
        raise VaelabError(f"{where}: {got} for {count} images ({images_where})")
    labels = labels.to(torch.int64)
    if count and int(labels.min()) < 0:
        raise VaelabError(f"{where}: labels must be class indices 0, 1, ...; found {labels.min()}")
    if count and int(labels.max()) >= MAX_CLASSES:
        raise VaelabError(
            f"{where}: label {int(labels.max())} is not a class index (vaelab takes up to "
            f"{MAX_CLASSES:,} classes, numbered from 0)"
        )
    return labels


@dataclass(frozen=True)
class SourceSets:
    """What a reader found in a source: its training set, its test set (None: one is split off
    the training set), and what the Dataset is named by."""

    train: ImageSet
    test: ImageSet | None
    source: str
    format: str
    class_names: tuple[str, ...] = ()

    def dataset(self, config: DataConfig) -> Dataset:
        """The Dataset of these sets under `config` (split, labels and classes as it says)."""
        return build_dataset(
            self.train, self.test, config, source=self.source, format=self.format,
            class_names=self.class_names,
        )  # fmt: skip


def build_dataset(
    train: ImageSet,
    test: ImageSet | None,
    config: DataConfig,
    *,
    source: str,
    format: str,
    class_names: tuple[str, ...] = (),
) -> Dataset:
    """The Dataset of `train` and `test`; without `test`, a seeded split of `train`
    (`config.test_split`, `config.split_seed`) that keeps the images' order."""
    require_same_shape(train, test)
    _require_image_size(train, config)
    dropped = [s.where for s in (train, test) if s is not None and s.alpha_dropped]
    if dropped:
        note(f"{' and '.join(dropped)}: 4 channels (RGBA); the alpha channel is dropped")
    for split in (train, test):
        narrow = None if split is None else narrow_range_note(split.pixels, split.where)
        if narrow:
            note(narrow)
    train, test = _labels_agree(train, test, config)
    names = _class_names(train, test, config, class_names)
    train_images, train_labels = train.images(), train.labels
    if test is None:
        total = len(train_images)
        held = held_out(total, config.test_split, config.split_seed, "test_split")
        test_images, test_labels = train_images.take(held), _rows(train_labels, held)
        train_images = train_images.without(held)
        train_labels = None if train_labels is None else _rows(train_labels, others(total, held))
    else:
        test_images, test_labels = test.images(), test.labels
        tell_shared(train_images, test_images)
    channels, height, width = train.shape
    return Dataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        image_shape=(height, width),
        class_names=names,
        source=source,
        channels=channels,
        format=format,
    )


def tell_shared(train: Images, test: Images) -> None:
    """A note when images of the test set are also in the training set (by their bytes; see
    `vaelab.data.overlap`)."""
    from vaelab.data.overlap import describe_shared, remembered_shared_count

    if _SHARED_UNTOLD:
        return
    count = remembered_shared_count(train, test)
    if count:
        note(describe_shared(count, len(test), test.where, train.where))


def _require_image_size(train: ImageSet, config: DataConfig) -> None:
    """Refuse an `image_size` the images do not have: readers that do not resize (CSV, IDX,
    arrays) would otherwise pass over it without a word."""
    _, height, width = train.shape
    if config.image_size and (height, width) != tuple(config.image_size):
        raise VaelabError(
            f"{train.where}: images are {height}x{width}, image_size says "
            f"{_size(config.image_size)}; only the images of folders and of Parquet or Arrow "
            "files are resized",
            parameters=("image_size",),
        )


def _rows(labels: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if labels is None else labels[rows]


def require_same_shape(train: ImageSet, test: ImageSet | None) -> None:
    """Refuse a test set whose images have another shape than the training set's."""
    if test is not None and test.shape != train.shape:
        raise VaelabError(
            f"{test.where}: test images are {_shape(test.shape)} but training images "
            f"({train.where}) are {_shape(train.shape)}"
        )


def _labels_agree(
    train: ImageSet, test: ImageSet | None, config: DataConfig
) -> tuple[ImageSet, ImageSet | None]:
    if not config.labels:
        return (
            replace(train, labels=None),
            None if test is None else replace(test, labels=None),
        )
    if test is not None and (train.labels is None) != (test.labels is None):
        unlabelled = test if test.labels is None else train
        labelled = train if test.labels is None else test
        raise VaelabError(
            f"{unlabelled.where}: no labels, but {labelled.labels_where or labelled.where} has "
            "them; give labels for both or ignore them (labels=False)",
            parameters=("labels",),
        )
    return train, test


def _class_names(
    train: ImageSet, test: ImageSet | None, config: DataConfig, found: tuple[str, ...]
) -> tuple[str, ...]:
    labels = [train.labels] + ([] if test is None else [test.labels])
    if train.labels is None:
        if config.labels and config.class_names:
            raise VaelabError(
                f"{train.where}: class_names given, but the images carry no labels",
                parameters=("class_names",),
            )
        return ()
    if config.class_names and found and len(config.class_names) != len(found):
        raise VaelabError(
            f"{train.where}: class_names names {len(config.class_names)} classes but the data "
            f"has {len(found)} ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''})",
            parameters=("class_names",),
        )
    names = class_names_for(labels, config.class_names or found)
    for split in (train, test):
        top = (
            -1
            if split is None or split.labels is None or not len(split.labels)
            else int(split.labels.max())
        )
        if split is not None and top >= len(names):
            raise VaelabError(
                f"{split.labels_where or split.where}: label {top} but only {len(names)} class "
                "names (class_names)",
                parameters=("class_names",),
            )
    return names


def _size(size: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in size)


def _shape(shape: tuple[int, int, int]) -> str:
    channels, height, width = shape
    return f"{height}x{width} with {channels} channel{'s' if channels > 1 else ''}"
