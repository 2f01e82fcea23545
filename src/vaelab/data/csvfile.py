"""The tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from vaelab._io import read_text
from vaelab.data.dataset import Dataset, to_unit_float
from vaelab.data.fashion_mnist import FASHION_MNIST_CLASSES
from vaelab.errors import VaelabError


def read_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255.

    Every field, the label included, must be an integer in 0-255 (IDX labels are uint8 too).

    Returns (images as uint8 N x D, labels as int64 N). D must be a square.
    """
    path = Path(path)
    text = read_text(path, "a CSV file")
    header, _, body = text.partition("\n")
    columns = _check_csv_header(path, header.rstrip("\r"))
    values = _parse_csv_fast(body, columns)
    if values is None:
        _raise_first_csv_problem(path, body, columns)
        raise VaelabError(f"{path}: could not parse the CSV rows")  # pragma: no cover
    if len(values) == 0:
        raise VaelabError(f"{path}: no data rows after the header")
    labels, pixels = values[:, 0], values[:, 1:]
    if not ((values >= 0) & (values <= 255)).all():
        _raise_first_csv_problem(path, body, columns)
    return pixels.astype(np.uint8), labels.astype(np.int64)


def _check_csv_header(path: Path, header: str) -> int:
    if not header.strip():
        raise VaelabError(f"{path}: empty file, expected a header line 'label,pixel1,...'")
    names = [name.strip() for name in header.split(",")]
    if names[0].lower() != "label" or any(_is_number(name) for name in names):
        raise VaelabError(
            f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' "
            f"but found '{header[:40]}'"
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


def _raise_first_csv_problem(path: Path, body: str, columns: int) -> None:
    for offset, line in enumerate(body.split("\n")):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        line_no = offset + 2
        fields_ = line.split(",")
        if len(fields_) != columns:
            raise VaelabError(
                f"{path}: line {line_no}: expected {columns} columns, found {len(fields_)}"
            )
        for col, raw in enumerate(fields_, start=1):
            what = "label" if col == 1 else f"pixel{col - 1}"
            if not _INTEGER_FIELD.fullmatch(raw):
                raise VaelabError(
                    f"{path}: line {line_no}, column {col} ({what}): '{raw[:20]}' is not an integer"
                )
            value = int(raw)
            if not 0 <= value <= 255:  # labels share the IDX format's uint8 range
                raise VaelabError(
                    f"{path}: line {line_no}, column {col} ({what}): {value} is outside 0-255"
                )


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
