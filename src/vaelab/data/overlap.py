"""Test images that are also training images, found by a hash of each image's stored bytes.

A test set that shares images with the training set flatters the model: its test loss is partly
a training loss. When a source has a test set of its own (a file, a folder, a split the source
names), each test image's bytes are hashed (BLAKE2b, 8 bytes) and the training images streamed
past them a block at a time, so that memory holds hashes only: 8 bytes a test image, and one
block of training images. The count is remembered in the cache (``<cache>/overlaps/``) for
images mapped from files, keyed by those files' sizes and times, so that reading the same files
again (opening a run, evaluating it) does not hash them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import numpy as np
import torch

from vaelab._io import atomic_write_text, parse_json, read_text
from vaelab.data.images import Images
from vaelab.errors import VaelabError

_DIGEST_BYTES = 8
_MEMO_FOLDER = "overlaps"


def shared_count(train: Images, test: Images) -> int:
    """How many of the images of `test` are, byte for byte, also images of `train` (0 when they
    are stored in different types)."""
    if train.stored_dtype != test.stored_dtype or not len(train) or not len(test):
        return 0
    train.check()  # bad training pixels are refused before the test set's, as training does
    wanted = np.sort(np.concatenate(list(_digests(test))))
    found = np.zeros(len(wanted), dtype=bool)
    for block in _digests(train):
        found |= np.isin(wanted, block)
    return int(found.sum())


def _digests(images: Images) -> Iterator[np.ndarray]:
    """The hash of each image, as uint64, one array a block of images, block after block."""
    for rows in images.block_ranges():
        stored = images.stored(rows).cpu().contiguous()
        raw = stored.view(torch.uint8).numpy() if stored.dtype != torch.uint8 else stored.numpy()
        joined = b"".join(
            hashlib.blake2b(row.tobytes(), digest_size=_DIGEST_BYTES).digest() for row in raw
        )
        yield np.frombuffer(joined, dtype="<u8")


def remembered_shared_count(train: Images, test: Images) -> int:
    """`shared_count`, remembered in the cache while the files both sets are mapped from are
    unchanged (counted afresh for images held in memory, or where the cache cannot be written)."""
    from vaelab.data.prepared import cache_root

    key = _memo_key(train, test)
    memo = None if key is None else cache_root() / _MEMO_FOLDER / f"{key}.json"
    if memo is not None and memo.is_file():
        try:
            count = parse_json(read_text(memo), memo).get("shared")
        except (VaelabError, AttributeError):
            count = None
        if isinstance(count, int) and count >= 0:
            return count
    count = shared_count(train, test)
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo, json.dumps({"shared": count}))
        except (OSError, VaelabError):
            pass  # a cache that cannot be written: counted again next time
    return count


def _memo_key(train: Images, test: Images) -> str | None:
    """What identifies the two sets' stored images while their files are unchanged; None when
    either is held in memory."""
    described = []
    for images in (train, test):
        if images.file is None or images.rows is not None:
            return None
        try:
            info = os.stat(images.file)
        except OSError:
            return None
        pixels = images.pixels
        described.append([
            os.path.abspath(images.file), info.st_size, info.st_mtime_ns, pixels.storage_offset(),
            list(pixels.shape), str(pixels.dtype),
        ])  # fmt: skip
    text = json.dumps(described).encode()
    return hashlib.sha256(text).hexdigest()[:24]


def describe_shared(count: int, test_count: int, test_where: str, train_where: str) -> str:
    """The note that `count` of the `test_count` test images are training images too."""
    if count == test_count:
        return (
            f"{test_where}: all {test_count:,} test images are also in the training set "
            f"({train_where}): the test loss measures how well the model redraws images it "
            "trained on, not how it does on new ones; give a test set apart from the training "
            "images"
        )
    return (
        f"{test_where}: {count:,} of the {test_count:,} test images are also in the training set "
        f"({train_where}), byte for byte; the test loss on them flatters the model"
    )
