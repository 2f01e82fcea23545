"""Bad-input cases of one group (see tests/bad_input_cases.py, which gathers every group):
reads of what is not a regular file, of files over the limits, and of headers that claim too much.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from tests.bad_input_cases import (
    IDX_STEMS,
    RUN,
    SMALL,
    Case,
    csv_pair,
    evaluate_spoiled,
    raw_idx,
    replace_file,
    with_bad_train_csv,
    with_idx,
)

HEADER_4 = "label,p1,p2,p3,p4\n"
BOMB_INFLATES_TO = 1 << 30  # bytes of zeros after the header: 1 GiB from about 1 MiB of gzip


@lru_cache(maxsize=1)
def gzip_bomb(shape: tuple[int, ...] = (300, 4, 4)) -> bytes:
    """About 1 MiB of gzip whose IDX header declares `shape` and that inflates to over 1 GiB.

    Built as gzip members of 16 MiB of zeros each, concatenated (one stream, as gzip allows).
    """
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    member = gzip.compress(bytes(16 << 20), compresslevel=9)
    return gzip.compress(header) + member * (BOMB_INFLATES_TO // (16 << 20))


def train_csv_at(train: str, make: Callable[[Path], None] = lambda work: None):
    """`vaelab train` with --train-csv `train` (made by `make` in the work dir)."""

    def build(work: Path) -> list[str]:
        _, test = csv_pair(work)
        make(work)
        return ["train", *SMALL, "--train-csv", train, "--test-csv", test, *RUN]

    return build


def mkfifo(name: str) -> Callable[[Path], None]:
    return lambda work: os.mkfifo(work / name)


def symlink_loop(name: str) -> Callable[[Path], None]:
    return lambda work: os.symlink(name, work / name)


def train_images(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """Make the train-images file of a data directory anew with `change(path)`."""

    def spoil(directory: Path) -> None:
        path = directory / IDX_STEMS["train-images"]
        path.unlink()
        change(path)

    return spoil


def empty_split(directory: Path) -> None:
    (directory / IDX_STEMS["train-images"]).write_bytes(
        gzip.compress(raw_idx(0x08, (0, 4, 4), b""))
    )
    (directory / IDX_STEMS["train-labels"]).write_bytes(gzip.compress(raw_idx(0x08, (0,), b"")))


def large_config(run: Path) -> None:
    (run / "config.json").write_text('{"pad": "' + "x" * (17 << 20) + '"}')


HUGE = "9" * 5000

# fmt: off
CASES: list[Case] = [
    Case("reads", "CSV path is a named pipe (FIFO)", train_csv_at("pipe.csv", mkfifo("pipe.csv")),
         r"is a named pipe \(FIFO\), not a regular file; expected a CSV file", "pipe.csv"),
    Case("reads", "CSV path is a device (/dev/zero)", train_csv_at("/dev/zero"),
         "is a device, not a regular file; expected a CSV file", "/dev/zero"),
    Case("reads", "CSV path is a symlink loop", train_csv_at("loop.csv", symlink_loop("loop.csv")),
         "symlink loop", "loop.csv"),
    Case("reads", "IDX file is a named pipe (FIFO)",
         with_idx(train_images(lambda path: os.mkfifo(path))),
         r"is a named pipe \(FIFO\), not a regular file; expected an IDX file",
         "data/train-images-idx3-ubyte.gz"),
    Case("reads", "IDX file is a symlink loop",
         with_idx(train_images(lambda path: os.symlink(path.name, path))),
         "symlink loop", "data/train-images-idx3-ubyte.gz"),
    Case("reads", "config.json larger than 16 MiB", evaluate_spoiled(large_config),
         r"17.0 MiB \(\d+ bytes\) is more than the 16.0 MiB \(16777216 bytes\).*VAELAB_MAX_READ",
         "runs/old/config.json"),
    Case("IDX", "header declares 255 dimensions",
         with_idx(replace_file("train-labels", bytes([0, 0, 8, 255]) + bytes(1020))),
         "declares 255 dimensions; vaelab reads 1 to 4", "train-labels-idx1-ubyte.gz"),
    Case("IDX", "header declares 60000 x 10000 x 10000 images",
         with_idx(replace_file("train-images", raw_idx(0x08, (60000, 10000, 10000), b""))),
         r"declares shape \(60000, 10000, 10000\) \(6000000000000 bytes\), more than the 4.0 GiB",
         "train-images-idx3-ubyte.gz"),
    Case("IDX", "gzip bomb: 1 MiB that inflates to 1 GiB",
         with_idx(lambda d: (d / IDX_STEMS["train-images"]).write_bytes(gzip_bomb())),
         r"declares shape \(300, 4, 4\) \(4800 bytes\) but the file holds more than 4800 bytes",
         "train-images-idx3-ubyte.gz"),
    Case("IDX", "0 images", with_idx(empty_split),
         "holds 0 images", "train-images-idx3-ubyte.gz"),
    Case("IDX", "images of 0x0 pixels",
         with_idx(replace_file("train-images", raw_idx(0x08, (300, 0, 0), b""))),
         "images of 0x0 pixels", "train-images-idx3-ubyte.gz"),
    Case("CSV", "a 5000-digit number in a pixel",
         with_bad_train_csv(HEADER_4 + f"1,2,3,{HUGE},5\n"),
         r"line 2, column 4 \(pixel3\): 99999999999999999999\.\.\. \(5000 digits\) is outside",
         "bad.csv"),
    Case("CSV", "1 MiB of NUL bytes (no newline)", with_bad_train_csv(bytes(1 << 20)),
         r"line 1: the header '(\\x00){40}' names neither a label column first", "bad.csv"),
    Case("CSV", "a 5000-digit negative label",
         with_bad_train_csv(HEADER_4 + f"-{HUGE},2,3,4,5\n"),
         r"line 2, column 1 \(label\): -9+\.\.\. \(5000 digits\) is outside 0-255", "bad.csv"),
]
# fmt: on
