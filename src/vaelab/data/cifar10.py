"""CIFAR-10's binary version: `cifar-10-binary.tar.gz`, or the folder it unpacks to.

Each batch file (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) is a run of records of one
label byte and 3,072 pixel bytes: 1,024 red, 1,024 green, 1,024 blue, each 32x32 row by row, so a
record is already the channel-major 3 x 32 x 32 image vaelab stores. The archive is read in place,
never extracted: only regular members by those names are read, every member's declared size is
checked before its data is, and the sizes together stay within the limit on reads. The pickled
"python version" of CIFAR-10 is not read at all (unpickling a file can run code).
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from vaelab._io import FILE_LIMIT, open_regular, over_limit, read_bytes, read_limit
from vaelab.errors import VaelabError

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
RECORD = 1 + 3 * 32 * 32
_BATCH_LIMIT = 10_000 * RECORD  # each official batch holds exactly 10,000 records
_MAX_MEMBERS = 1000  # the official archive has 9; a longer list is not CIFAR-10

Batches = dict[str, bytes]


def cifar10_found(directory: Path) -> Path | None:
    """Where CIFAR-10 lies in `directory`: the archive, or a folder holding the six batches
    (`directory` itself or its cifar-10-batches-bin/); None when neither is there."""
    archive = directory / CIFAR10_ARCHIVE
    if archive.exists() or archive.is_symlink():
        return archive
    for folder in (directory / CIFAR10_FOLDER, directory):
        if all((folder / name).exists() for name in BATCHES):
            return folder
    return None


def read_cifar10(where: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N x 3072 uint8, train labels, test images, test labels) from the archive or
    folder `where` (see `cifar10_found`)."""
    batches = _read_folder(where) if where.is_dir() else read_archive(where)
    train = [_records(where / name, batches[name]) for name in TRAIN_BATCHES]
    test_images, test_labels = _records(where / TEST_BATCH, batches[TEST_BATCH])
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return train_images, train_labels, test_images, test_labels


def _read_folder(folder: Path) -> Batches:
    most = read_limit(FILE_LIMIT)
    return {name: read_bytes(folder / name, "a CIFAR-10 batch file", most) for name in BATCHES}


def read_archive(path: Path) -> Batches:
    """The six batch files of the tar archive `path` (gzip-compressed or not), read in place."""
    most = read_limit(FILE_LIMIT)
    with open_regular(path, "a CIFAR-10 archive") as handle:
        try:
            with tarfile.open(fileobj=handle, mode="r:*") as archive:
                batches = _members(path, archive, most)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise VaelabError(f"{path}: not a readable tar archive ({exc})") from None
    lacking = [name for name in BATCHES if name not in batches]
    if lacking:
        raise VaelabError(f"{path}: the archive lacks {', '.join(lacking)}")
    return batches


def _members(path: Path, archive: tarfile.TarFile, most: int) -> Batches:
    batches: Batches = {}
    declared = 0
    for count, member in enumerate(archive, start=1):
        if count > _MAX_MEMBERS:
            raise VaelabError(f"{path}: more than {_MAX_MEMBERS} members; not CIFAR-10's archive")
        declared += max(member.size, 0)
        if declared > most:
            raise VaelabError(f"{path}: the archive's members declare {declared} bytes, "
                              f"{over_limit(most)}")  # fmt: skip
        name = member.name.rsplit("/", 1)[-1]
        if name not in BATCHES:
            continue
        where = f"{path}: member {member.name}"
        if not member.isreg():
            raise VaelabError(f"{where} is {_kind(member)}, not a regular file; refused")
        if name in batches:
            raise VaelabError(f"{where} appears twice in the archive")
        if member.size > _BATCH_LIMIT:
            raise VaelabError(
                f"{where} declares {member.size} bytes; a CIFAR-10 batch holds at most "
                f"{_BATCH_LIMIT} (10,000 records of {RECORD} bytes)"
            )
        batches[name] = _member_bytes(where, archive.extractfile(member), member.size)
    return batches


def _member_bytes(where: str, stream: IO[bytes] | None, size: int) -> bytes:
    if stream is None:
        raise VaelabError(f"{where} cannot be read")
    data = stream.read(size)
    if len(data) != size:
        raise VaelabError(f"{where} declares {size} bytes but the archive holds {len(data)}")
    return data


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname})"
    if member.islnk():
        return f"a hard link (to {member.linkname})"
    if member.isdir():
        return "a directory"
    return "a special file"


def _records(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3072, labels N) of one batch; sizes and labels checked."""
    if not data or len(data) % RECORD:
        raise VaelabError(
            f"{path}: {len(data)} bytes is not a whole number of CIFAR-10 records "
            f"({RECORD} bytes each: 1 label, 3072 pixels); truncated?"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= len(CIFAR10_CLASSES))
    if bad.size:
        raise VaelabError(
            f"{path}: record {int(bad[0]) + 1} has label {int(labels[bad[0]])}; CIFAR-10's "
            "labels are 0-9"
        )
    return records[:, 1:], labels
