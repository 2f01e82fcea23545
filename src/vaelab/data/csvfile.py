"""CSV files of images: the tutorial's layout (a `label,pixel1,...,pixelD` header, then integer
rows 0-255), the same without the label column, gzipped or not, with or without a byte-order
mark."""

from __future__ import annotations

import codecs
import math
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaelab._io import CSV_LIMIT, read_bytes, read_limit, too_large
from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.layout import ImageSet, SourceSets
from vaelab.errors import VaelabError


def read_csv(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read the tutorial's CSV layout: a `label,pixel1,...,pixelD` header, then integer rows 0-255.

    Every field, the label included, must be an integer in 0-255 (IDX labels are uint8 too).
    A file larger than `limit` bytes (default `vaelab._io.CSV_LIMIT`, replaced by
    ``$VAELAB_MAX_READ_BYTES`` when set) is refused; the rows are parsed in blocks, so memory
    stays a small multiple of the file's size. A gzipped file (``.csv.gz``) is decompressed up to
    the same limit; a UTF-8 byte-order mark is skipped.

    Returns (images as uint8 N x D, labels as int64 N). D must be a square.
    """
    pixels, labels = read_csv_images(path, limit, require_labels=True)
    assert labels is not None
    return pixels, labels


def read_csv_images(
    path: str | Path, limit: int | None = None, require_labels: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a CSV file of images: (uint8 pixels N x D, int64 labels N or None).

    The header says which layout it is: a first column named like a label ('label', 'labels',
    'class', 'target', 'y') is the label of each row, and the rest its pixels; a header of
    nothing but pixel names ('pixel1', 'px3', 'p0', '1x1', ...) is images without labels. Any
    other header, or none (a first line of numbers), is refused; so is a label-less file when
    `require_labels`.
    """
    path = Path(path)
    raw = _csv_bytes(path, CSV_LIMIT if limit is None else limit)
    start = len(_BOM) if raw.startswith(_BOM) else 0
    _check_utf8(path, raw, start)
    newline = raw.find(b"\n", start)
    header_end = len(raw) if newline < 0 else newline
    if header_end - start > 256:  # a long first line: refuse a non-header before decoding it
        text = raw[start : start + 256].decode("utf-8", errors="replace")
        _check_header_start(path, text, require_labels)
    header = raw[start:header_end].decode("utf-8").rstrip("\r")
    columns, labelled = _header_layout(path, header, require_labels)
    blocks = []
    line_no = 2  # the number of the first line of the next block
    for block in _blocks(raw, header_end + 1):
        text = block.decode("utf-8")
        values = _parse_csv_fast(text, columns)
        if values is None or not ((values >= 0) & (values <= 255)).all():
            values = _parse_csv_slow(path, text, columns, line_no, labelled)
        blocks.append(values.astype(np.uint8))
        line_no += text.count("\n")
    del raw  # the blocks hold what is needed; free the text before they are joined
    values = np.concatenate(blocks) if blocks else np.zeros((0, columns), np.uint8)
    if len(values) == 0:
        raise VaelabError(f"{path}: no data rows after the header")
    if not labelled:
        return values, None
    return values[:, 1:], values[:, 0].astype(np.int64)


_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 16 << 20


def _csv_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes, decompressed when it is gzipped, never more than `limit` of them."""
    most = read_limit(limit)
    raw = read_bytes(path, "a CSV file", most)
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    out = bytearray()
    inflater = zlib.decompressobj(wbits=31)
    data = raw
    try:
        while data:
            out += inflater.decompress(data, most + 1 - len(out))
            if len(out) > most:
                raise too_large(path, "the decompressed text", most)
            data = inflater.unconsumed_tail
            if not data and inflater.eof and inflater.unused_data:  # another gzip member
                data, inflater = inflater.unused_data, zlib.decompressobj(wbits=31)
        if not inflater.eof:
            raise VaelabError(f"{path}: corrupt or truncated gzip data (the stream ends early)")
    except zlib.error as exc:
        raise VaelabError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return bytes(out)


def _check_utf8(path: Path, raw: bytes, start: int) -> None:
    """Refuse text that is not UTF-8, naming the first bad byte, without decoding it all at once."""
    if raw.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    for offset in range(start, len(raw), _CHUNK):
        try:
            decoder.decode(view[offset : offset + _CHUNK], final=offset + _CHUNK >= len(raw))
        except UnicodeDecodeError as exc:
            raise VaelabError(
                f"{path}: not a text file (byte {offset + exc.start} is not UTF-8)"
            ) from None


_BLOCK = 8 << 20  # bytes of CSV text parsed at a time


def _blocks(raw: bytes, start: int) -> Iterator[bytes]:
    """`raw[start:]` in pieces of about `_BLOCK` bytes, each ending at the end of a line."""
    while start < len(raw):
        end = raw.find(b"\n", min(start + _BLOCK, len(raw)) - 1)
        end = len(raw) if end < 0 else end + 1
        yield raw[start:end]
        start = end


LABEL_NAMES = ("label", "labels", "class", "target", "y")
_PIXEL_NAME = re.compile(r"[a-z_]*[0-9]+(x[0-9]+)?", re.IGNORECASE)


def _header_layout(path: Path, header: str, require_labels: bool) -> tuple[int, bool]:
    """(columns, whether the first is the label) as the header line says."""
    if not header.strip():
        raise VaelabError(f"{path}: empty file, expected a header line 'label,pixel1,...'")
    names = [name.strip() for name in header.split(",")]
    labelled = _check_names(path, names, header, require_labels)
    pixels = len(names) - labelled
    side = math.isqrt(pixels)
    if pixels == 0 or side * side != pixels:
        raise VaelabError(
            f"{path}: line 1: {pixels} pixel columns is not a square image size (e.g. 784 = 28x28)"
        )
    return len(names), labelled


def _check_header_start(path: Path, start: str, require_labels: bool) -> None:
    """Refuse a long first line that cannot be a header from its first names alone."""
    names = [name.strip() for name in start.split(",")]
    # The last name may be cut short, unless it is the only one: no name is 256 characters long.
    _check_names(path, names[:-1] if len(names) > 1 else names, start, require_labels)


def _check_names(path: Path, names: list[str], header: str, require_labels: bool) -> bool:
    shown = header[:40].encode("unicode_escape").decode("ascii")
    if any(_is_number(name) for name in names):
        raise VaelabError(
            f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' "
            f"but found '{shown}'"
        )
    labelled = names[0].lower() in LABEL_NAMES
    if require_labels and not labelled:
        raise VaelabError(
            f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' "
            f"but found '{shown}'"
        )
    if not labelled and not all(_PIXEL_NAME.fullmatch(name) for name in names):
        raise VaelabError(
            f"{path}: line 1: the header '{shown}' names neither a label column first "
            "('label', ...) nor only pixels ('pixel1,pixel2,...')"
        )
    return labelled


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


def _parse_csv_slow(
    path: Path, body: str, columns: int, first_line: int, labelled: bool = True
) -> np.ndarray:
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
            what = "label" if labelled and col == 1 else f"pixel{col - labelled}"
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
    """A Dataset from a training and a test CSV file (same pixel count in both), read as
    `DataConfig(train_csv=..., test_csv=...)` reads them: by `read_csv_images` (a label column,
    or none), the classes named by their indices ('0', '1', ...)."""
    from vaelab.data.sources import load_csv_pair

    return load_csv_pair(DataConfig(train_csv=str(train_csv), test_csv=str(test_csv)))


def _same_pixel_count(
    train_csv: str | Path, train: np.ndarray, test_csv: str | Path, test: np.ndarray
) -> None:
    if train.shape[1] != test.shape[1]:
        raise VaelabError(
            f"{test_csv}: {test.shape[1]} pixel columns but {train_csv} has {train.shape[1]}"
        )


def load_csv_source(path: Path, test_path: Path | None, config: DataConfig) -> Dataset:
    """A Dataset from a CSV file of images (``.csv`` or ``.csv.gz``, see `read_csv_images`), and
    `test_path` for the test set; without it, `config.test_split` of the rows are held out
    (seeded by `config.split_seed`). `config.labels` False ignores a label column; the classes
    are named by `config.class_names`, else by their indices."""
    return read_csv_source(path, test_path).dataset(config)


def read_csv_source(path: Path, test_path: Path | None) -> SourceSets:
    """The sets of a CSV source (see `load_csv_source`), read into memory."""
    train = read_csv_images(path)
    test = None if test_path is None else read_csv_images(test_path)
    if test is not None:
        _same_pixel_count(path, train[0], test_path or "", test[0])
    test_set = None if test is None else _image_set(test_path, *test)
    return SourceSets(_image_set(path, *train), test_set, str(path), "csv")


def _image_set(path: Path | None, pixels: np.ndarray, labels: np.ndarray | None) -> ImageSet:
    side = math.isqrt(pixels.shape[1])  # the reader refuses pixel counts that are not square
    images = pixels.reshape(len(pixels), side, side)
    return ImageSet.of_grey(images, labels, str(path), str(path))
