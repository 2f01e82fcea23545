"""What `DataConfig.source` names, told from the path itself: a built-in dataset's name, a folder
of images, a .npy or .npz file, IDX files (a file, or a folder of them), a CSV file, or Parquet
or Arrow files (a file, a folder of them, a Hugging Face dataset saved with `save_to_disk`); the
test source, when given, must be of the same kind. The tutorial's `train_csv` and `test_csv` are
read by the same CSV reader."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vaelab._io import open_regular, read_error
from vaelab.config import DataConfig
from vaelab.data.arrowlayout import holds_tables, is_table_file
from vaelab.data.dataset import Dataset
from vaelab.data.folder import FORMATS_READ, IMAGE_SUFFIXES
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.data.download import Opener
    from vaelab.data.prepared import Prepared

_FAMILY = {"folder": "an image folder", "arrays": "a NumPy file", "idx": "IDX", "csv": "CSV",
           "arrow": "Parquet or Arrow"}  # fmt: skip
_PROBED = 64  # files of a folder whose first bytes are looked at for an IDX header


def load_source(config: DataConfig, opener: Opener | None = None) -> Dataset:
    """The Dataset `config.source` (and `config.test_source`) names."""
    from vaelab.data.registry import DATASETS, is_builtin_name

    if config.source is None:
        raise VaelabError("no source given", parameters=("source",))
    if is_builtin_name(config.source):
        if config.test_source is not None:
            raise VaelabError(
                f"{config.source} is a built-in dataset with its own test split; drop test_source",
                parameters=("test_source",),
            )
        from vaelab.data.builtin import load_builtin

        check_reading_options("builtin", config.source, config)
        return load_builtin(config.source, config, opener=opener)
    path = Path(config.source)
    kind = source_kind(path, DATASETS)
    test = None if config.test_source is None else Path(config.test_source)
    if test is not None:
        test_kind = source_kind(test, DATASETS)
        if test_kind != kind:
            raise VaelabError(
                f"{test}: the test set is {_FAMILY[test_kind]}, the training set ({path}) "
                f"{_FAMILY[kind]}; give both in one format",
                parameters=("test_source",),
            )
    return _load(kind, path, test, config)


def load_csv_pair(config: DataConfig) -> Dataset:
    """The tutorial's `train_csv` and `test_csv`, read as a CSV `source` and its `test_source`
    are: by the one CSV reader, under the same rules (a label column or none, `labels`,
    `class_names`, the prepared copy)."""
    if config.train_csv is None or config.test_csv is None:
        raise VaelabError("give train_csv and test_csv together", parameters=("train_csv",))
    train, test = Path(config.train_csv), Path(config.test_csv)
    for path in (train, test):  # named as CSV files whatever their suffix: no format to guess
        open_regular(path, "a CSV file").close()
    as_source = replace(
        config, source=str(train), test_source=str(test), train_csv=None, test_csv=None
    )
    return _load("csv", train, test, as_source)


def _load(kind: str, path: Path, test: Path | None, config: DataConfig) -> Dataset:
    """NumPy files of uncompressed arrays mapped as they are; every other source decoded once
    into the cache and mapped from there (`vaelab.data.prepared`)."""
    check_reading_options(kind, path, config)
    if kind == "arrays" and not any(compressed_npz(p) for p in (path, test) if p is not None):
        from vaelab.data.arrays import load_array_file

        return load_array_file(path, test, config)
    from vaelab.data.prepared import Source, read_prepared

    prepared_kind = "npz" if kind == "arrays" else kind
    return read_prepared(Source(prepared_kind, path, test, config)).dataset(config)


def prepare_source(data: DataConfig | str | Path, progress: bool = False) -> Prepared:
    """Prepare the source `data` names (a DataConfig, or a path) in the cache now, as training
    would on first use: decoded once, mapped while unchanged (see `vaelab.data.prepared`).

    Returns where it is and whether it was already prepared. A built-in dataset's name, and a
    NumPy file whose arrays can be mapped as they are, are refused in one line: nothing to do.
    """
    from vaelab.data.prepared import Source, prepare
    from vaelab.data.registry import DATASETS, is_builtin_name

    config = data if isinstance(data, DataConfig) else DataConfig(source=str(data))
    if config.source is None:
        raise VaelabError("give the source to prepare (a path)", parameters=("source",))
    if is_builtin_name(config.source):
        raise VaelabError(
            f"{config.source} is a built-in dataset, read from its own files; nothing to prepare",
            parameters=("source",),
        )
    path = Path(config.source)
    test = None if config.test_source is None else Path(config.test_source)
    kind = source_kind(path, DATASETS)
    if test is not None and source_kind(test, DATASETS) != kind:
        raise VaelabError(
            f"{test}: the test set is of another format than {path}", parameters=("test_source",)
        )
    check_reading_options(kind, path, config)
    if kind == "arrays" and not any(compressed_npz(p) for p in (path, test) if p is not None):
        raise VaelabError(
            f"{path}: NumPy arrays stored uncompressed are mapped as they are; nothing to prepare",
            parameters=("source",),
        )
    return prepare(Source("npz" if kind == "arrays" else kind, path, test, config), progress)


# The reading options that only one family of sources reads: (the field, what it names, the kind).
_ONE_FAMILY_OPTIONS = (
    ("array_keys", "the arrays of a NumPy file", "arrays"),
    ("columns", "the image and label fields of Parquet or Arrow tables", "arrow"),
)


def check_reading_options(kind: str, path: Path | str, config: DataConfig) -> None:
    """Refuse a reading option that a source of `kind` ('folder', 'arrays', 'idx', 'csv',
    'arrow', 'builtin') would pass over without a word: array_keys for anything but a NumPy file,
    columns for anything but Parquet or Arrow files."""
    for field, names, reader in _ONE_FAMILY_OPTIONS:
        if getattr(config, field) and kind != reader:
            family = "a built-in dataset" if kind == "builtin" else _FAMILY[kind]
            raise VaelabError(
                f"{path}: {field} names {names}, and this is {family}, read without it; drop "
                f"{field}",
                parameters=(field,),
            )


def compressed_npz(path: Path) -> bool:
    """Whether `path` is an .npz file with a compressed member (those cannot be mapped)."""
    if path.suffix.lower() != ".npz":
        return False
    from vaelab.data.npyfile import npz_compressed

    return npz_compressed(path)


def source_kind(path: Path, builtin_names: tuple[str, ...] = ()) -> str:
    """'folder', 'arrays', 'idx', 'csv' or 'arrow': the reader of `path`; else one line naming
    it."""
    if not os.path.lexists(path):
        names = f"; built-in datasets: {', '.join(builtin_names)}" if builtin_names else ""
        raise VaelabError(f"{path}: not found (neither a file, a folder nor a dataset name{names})")
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise read_error(path, exc, "a data file or folder") from None
    return _folder_kind(path) if is_dir else _file_kind(path)


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".npy", ".npz")):
        return "arrays"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if is_table_file(path.name):
        return "arrow"
    if name.endswith(IMAGE_SUFFIXES):
        raise VaelabError(f"{path}: is one image; give the folder that holds the images")
    from vaelab.data.idx import is_idx_file

    if is_idx_file(path) or "idx" in name or "ubyte" in name:  # the IDX reader says what is wrong
        return "idx"
    raise VaelabError(f"{path}: not a format vaelab reads; it reads {FORMATS_READ}")


def _folder_kind(path: Path) -> str:
    """'idx' for a folder of IDX files (or torchvision's <root>/<Name>/raw/), 'arrow' for one of
    Parquet or Arrow files (or a dataset saved by Hugging Face `datasets`), else 'folder'."""
    from vaelab.data.idx import is_idx_file

    try:
        with os.scandir(path) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise read_error(path, exc, "a folder of images or IDX files") from None
    files = [e for e in entries if not e.name.startswith(".") and not e.is_dir()]
    if any(e.name.lower().endswith(IMAGE_SUFFIXES) for e in files):
        return "folder"
    if holds_tables(path):
        return "arrow"
    candidates = [Path(e.path) for e in files[:_PROBED]]
    folders = [path, *(Path(e.path) for e in entries if e.is_dir())]  # <Name>/ or <root>/
    for folder in folders:
        raw = folder / "raw"
        if raw.is_dir():
            try:
                candidates += sorted(raw.iterdir())[:_PROBED]
            except OSError:
                continue
    return "idx" if any(is_idx_file(c) for c in candidates if c.is_file()) else "folder"
