"""The tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vaelab._io import CSV_LIMIT, read_bytes
from vaelab.data.dataset import Dataset, to_unit_float
from vaelab.data.fashion_mnist import FASHION_MNIST_CLASSES
from vaelab.errors import VaelabError


def read_csv(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255.

    Every field, the label included, must be an integer in 0-255 (IDX labels are uint8 too).
    A file larger than `limit` bytes (default `vaelab._io.CSV_LIMIT`, replaced by
    ``$VAELAB_MAX_READ_BYTES`` when set) is refused; the rows are parsed in blocks, so memory
    stays a small multiple of the file's size.

    Returns (images as uint8 N x D, labels as int64 N). D must be a square.
    """
    path = Path(path)
    raw = read_bytes(path, "a CSV file", CSV_LIMIT if limit is None else limit)
    if not raw.isascii():  # the fast check; decoding only to find the first bad byte
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VaelabError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    newline = raw.find(b"\n")
    header_end = len(raw) if newline < 0 else newline
    if header_end > 256 and raw[:256].split(b",")[0].strip().lower() != b"label":
        _check_csv_header(path, raw[:256].decode("utf-8", errors="replace"))  # refused cheaply
    columns = _check_csv_header(path, raw[:header_end].decode("utf-8").rstrip("\r"))
    blocks = []
    line_no = 2  # the number of the first line of the next block
    for block in _blocks(raw, header_end + 1):
        text = block.decode("utf-8")
        values = _parse_csv_fast(text, columns)
        if values is None or not ((values >= 0) & (values <= 255)).all():
            values = _parse_csv_slow(path, text, columns, line_no)
        blocks.append(values.astype(np.uint8))
        line_no += text.count("\n")
    del raw  # the blocks hold what is needed; free the text before they are joined
    values = np.concatenate(blocks) if blocks else np.zeros((0, columns), np.uint8)
    if len(values) == 0:
        raise VaelabError(f"{path}: no data rows after the header")
    return values[:, 1:], values[:, 0].astype(np.int64)


_BLOCK = 8 << 20  # bytes of CSV text parsed at a time


def _blocks(raw: bytes, start: int) -> Iterator[bytes]:
    """`raw[start:]` in pieces of about `_BLOCK` bytes, each ending at the end of a line."""
    while start < len(raw):
        end = raw.find(b"\n", min(start + _BLOCK, len(raw)) - 1)
        end = len(raw) if end < 0 else end + 1
        yield raw[start:end]
        start = end


def _check_csv_header(path: Path, header: str) -> int:
    if not header.strip():
        raise VaelabError(f"{path}: empty file, expected a header line 'label,pixel1,...'")
    names = [name.strip() for name in header.split(",")]
    if names[0].lower() != "label" or any(_is_number(name) for name in names):
        raise VaelabError(
            f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' "
            f"but found '{header[:40].encode('unicode_escape').decode('ascii')}'"
        )
    pixels = len(names) - 1
    side = math.isqrt(pixels)
    if pixels == 0 or side * side != pixels:
        raise VaelabError(
            f"{path}: line 1: {pixels} pixel columns is not a square image size (e.g. 784 = 28x28)"
        )
    return len(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ASCII only: Python's int() would also take '1_0' and non-ASCII digits, NumPy's parser would not.
_INTEGER_FIELD = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*")
_NOT_INTEGER_TEXT = re.compile(r"[^0-9,+\- \t\r\n]")


def _parse_csv_fast(body: str, columns: int) -> np.ndarray | None:
    """Parse all rows in one C call; None when anything is off, so the slow path can say where."""
    rows = [line for line in body.replace("\r", "").split("\n") if line.strip()]
    if not rows:
        return np.zeros((0, columns), dtype=np.int64)
    if _NOT_INTEGER_TEXT.search(body):
        return None
    # Only digits, signs, commas and blanks are left, so integers are the only thing to parse;
    # int64 parsing is also about 6x faster than float64 here. Malformed fields stop the parse
    # early, which the size check catches.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flat = np.fromstring(",".join(rows), dtype=np.int64, sep=",")
        except ValueError:
            return None
    if flat.size != len(rows) * columns:
        return None
    if any(row.count(",") != columns - 1 for row in rows):
        return None
    return flat.reshape(len(rows), columns)


def _parse_csv_slow(path: Path, body: str, columns: int, first_line: int) -> np.ndarray:
    """The rows of `body` (line `first_line` onwards) field by field, refusing the first bad one."""
    rows = []
    for offset, line in enumerate(body.split("\n")):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        line_no = offset + first_line
        fields_ = line.split(",")
        if len(fields_) != columns:
            raise VaelabError(
                f"{path}: line {line_no}: expected {columns} columns, found {len(fields_)}"
            )
        row = []
        for col, raw in enumerate(fields_, start=1):
            what = "label" if col == 1 else f"pixel{col - 1}"
            where = f"{path}: line {line_no}, column {col} ({what})"
            if not _INTEGER_FIELD.fullmatch(raw):
                raise VaelabError(f"{where}: '{raw[:20]}' is not an integer")
            sign = "-" if raw.strip().startswith("-") else ""
            digits = raw.strip().lstrip("+-").lstrip("0") or "0"
            if len(digits) > _MAX_DIGITS:  # int() refuses more than 4300 digits; no need to try
                shown = f"{sign}{digits[:20]}... ({len(digits)} digits)"
                raise VaelabError(f"{where}: {shown} is outside 0-255")
            value = int(sign + digits)
            if not 0 <= value <= 255:  # labels share the IDX format's uint8 range
                raise VaelabError(f"{where}: {value} is outside 0-255")
            row.append(value)
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(rows), columns)


_MAX_DIGITS = 30  # a longer integer is shown shortened


def load_csv_dataset(train_csv: str | Path, test_csv: str | Path) -> Dataset:
    """A Dataset from two CSV files of the tutorial's layout (same pixel count in both)."""
    train_pixels, train_labels = read_csv(train_csv)
    test_pixels, test_labels = read_csv(test_csv)
    if train_pixels.shape[1] != test_pixels.shape[1]:
        raise VaelabError(
            f"{test_csv}: {test_pixels.shape[1]} pixel columns but {train_csv} has "
            f"{train_pixels.shape[1]}"
        )
    side = math.isqrt(train_pixels.shape[1])
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    names = FASHION_MNIST_CLASSES if n_classes <= 10 else tuple(str(i) for i in range(n_classes))
    return Dataset(
        train_images=to_unit_float(train_pixels),
        train_labels=torch.from_numpy(train_labels),
        test_images=to_unit_float(test_pixels),
        test_labels=torch.from_numpy(test_labels),
        image_shape=(side, side),
        class_names=names,
        source=f"csv ({train_csv}, {test_csv})",
    )
