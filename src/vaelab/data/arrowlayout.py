"""Where the rows of a Parquet or Arrow source are: its data files, and the split each belongs to.

A source is one of

- a ``.parquet`` file, or an ``.arrow`` file (Arrow IPC, stream or file format, as Hugging Face
  `datasets` writes them): one split;
- a folder written by `datasets`' ``Dataset.save_to_disk`` (its ``state.json`` lists its
  ``data-*.arrow`` files): one split;
- a folder written by ``DatasetDict.save_to_disk`` (``dataset_dict.json`` names the splits, one
  subfolder each);
- a folder of ``.parquet`` or ``.arrow`` files, directly or in subfolders, as a Hugging Face hub
  repository holds them (``data/train-00000-of-00001.parquet``, ``data/test-...``): a file belongs
  to the split a word of its path names, as the hub reads it (train, training; test, testing,
  eval, evaluation; validation, valid, val, dev); when no file names one, all are one split.

The training set is the ``train`` split (or the only one); the test set is the ``test`` split,
else a seeded split of the training set. Other splits (validation) are not read; a note says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vaelab._io import parse_json, read_error, read_text
from vaelab.data.layout import note
from vaelab.errors import VaelabError

SUFFIXES = (".parquet", ".arrow")
DICT_FILE = "dataset_dict.json"  # DatasetDict.save_to_disk
STATE_FILE = "state.json"  # Dataset.save_to_disk
_DEPTH = 3  # folders below a source searched for data files
_MAX_FILES = 100_000
_SPLIT_WORDS = {
    "train": ("train", "training"),
    "test": ("test", "testing", "eval", "evaluation"),
    "validation": ("validation", "valid", "val", "dev"),
}


@dataclass(frozen=True)
class Split:
    """The data files of one split in reading order, and what names the split in messages."""

    name: str
    where: Path | str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Layout:
    """The splits of a source by name ('' for files that name none) and the listing files
    (``dataset_dict.json``, ``state.json``) read to find them."""

    root: Path
    splits: dict[str, Split]
    listings: tuple[Path, ...] = ()


def is_table_file(name: str) -> bool:
    """Whether a file of this name is read as Parquet or Arrow data."""
    return name.lower().endswith(SUFFIXES) and not name.startswith(".")


def holds_tables(folder: Path) -> bool:
    """Whether `folder` is a Parquet or Arrow source: a dataset saved by `datasets`, or data
    files at its top or in its data/, train/ or test/ subfolders (looked at without going
    deeper, so that telling a folder's kind stays cheap)."""
    names, subfolders = _entries(folder)
    if DICT_FILE in names or any(is_table_file(n) for n in names):
        return True
    for sub in ("data", "train", "test"):
        if sub in subfolders:
            inside, _ = _entries(folder / sub)
            if any(is_table_file(n) for n in inside):
                return True
    return False


def source_splits(
    path: Path, test: Path | None, tell_unread: bool = False
) -> tuple[Split, Split | None]:
    """The training split of `path` and the test split: of `test` when given, else of `path`
    when it has one (else None: the test set is split off the training set). `tell_unread`
    notes the splits of `path` left unread (validation)."""
    train, held, found, _ = _chosen(path, test)
    left = [name or "(unnamed)" for name, split in found.splits.items()
            if split is not train and split is not held]  # fmt: skip
    if tell_unread and left:
        note(f"{path}: split(s) {', '.join(left)} not read (vaelab reads train and test)")
    return train, held


def source_files(path: Path, test: Path | None) -> list[Path]:
    """Every file the source is read from: listings first, then the data files in reading order."""
    train, held, _, listings = _chosen(path, test)
    return [*listings, *train.files, *(() if held is None else held.files)]


def _chosen(path: Path, test: Path | None) -> tuple[Split, Split | None, Layout, list[Path]]:
    """The training and test splits, the layout of `path`, and the listing files read."""
    found = find_layout(path)
    train, held, listings = _split_named(found, "train"), _test_split(found), [*found.listings]
    if test is not None:
        other = find_layout(test)
        held, listings = _split_named(other, "test"), listings + list(other.listings)
    return train, held, found, listings


def find_layout(path: Path) -> Layout:
    """The splits of the file or folder `path` (see the module's description)."""
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise read_error(path, exc, "a Parquet or Arrow file or folder") from None
    if not is_dir:
        if not is_table_file(path.name):
            raise VaelabError(f"{path}: not a Parquet (.parquet) or Arrow (.arrow) file")
        return Layout(path, {"": Split("", path, (path,))})
    if (path / DICT_FILE).is_file():
        return _dataset_dict(path)
    if (path / STATE_FILE).is_file():
        return Layout(path, {"": Split("", path, _state_files(path))}, (path / STATE_FILE,))
    return _named_files(path)


def _split_named(found: Layout, name: str) -> Split:
    """The split `name` ('train', or 'test' of a separate test source), else the only one."""
    if name in found.splits:
        return found.splits[name]
    if len(found.splits) == 1:
        return next(iter(found.splits.values()))
    role = "training" if name == "train" else "test"
    raise VaelabError(
        f"{found.root}: which split is the {role} set? It holds {_names(found)}; vaelab reads "
        f"the split named {name} (or the only one)",
        parameters=() if name == "train" else ("test_source",),
    )


def _test_split(found: Layout) -> Split | None:
    return found.splits.get("test") if "train" in found.splits else None


def _names(found: Layout) -> str:
    return ", ".join(name or "files of no split" for name in found.splits)


def split_of(text: str) -> str:
    """The split a word of `text` (a split's or a file's name) names: 'train', 'test',
    'validation', or '' for none."""
    words = re.split(r"[^a-z0-9]+", text.lower())
    for split, names in _SPLIT_WORDS.items():
        if any(word in names for word in words):
            return split
    return ""


# ---------------------------------------------------------------- saved by datasets


def _json(path: Path) -> object:
    return parse_json(read_text(path, "a JSON file written by datasets' save_to_disk"), path)


def _dataset_dict(root: Path) -> Layout:
    """The splits of a folder written by ``DatasetDict.save_to_disk``."""
    listed = _json(root / DICT_FILE)
    names = listed.get("splits") if isinstance(listed, dict) else None
    if not isinstance(names, list) or not names or not all(_plain_name(n) for n in names):
        raise VaelabError(
            f'{root / DICT_FILE}: expected {{"splits": [names of the split folders]}}, as '
            "DatasetDict.save_to_disk writes it"
        )
    splits: dict[str, Split] = {}
    listings = [root / DICT_FILE]
    for name in names:
        folder = root / name
        if not (folder / STATE_FILE).is_file():
            raise VaelabError(
                f"{folder}: split {name} of {root / DICT_FILE} has no {STATE_FILE} (not a "
                "folder written by save_to_disk)"
            )
        key = split_of(name) or name
        if key in splits:
            raise VaelabError(f"{root / DICT_FILE}: splits {splits[key].name} and {name} are both "
                              f"{key} splits; keep one")  # fmt: skip
        splits[key] = Split(name, folder, _state_files(folder))
        listings.append(folder / STATE_FILE)
    return Layout(root, splits, tuple(listings))


def _state_files(folder: Path) -> tuple[Path, ...]:
    """The Arrow files of a folder written by ``Dataset.save_to_disk``, as its state.json lists
    them (names inside the folder only)."""
    state_path = folder / STATE_FILE
    state = _json(state_path)
    listed = state.get("_data_files") if isinstance(state, dict) else None
    entries = listed if isinstance(listed, list) else []
    names = [entry.get("filename") if isinstance(entry, dict) else None for entry in entries]
    if not names or not all(_plain_name(n) for n in names):
        raise VaelabError(
            f'{state_path}: expected _data_files, a list of {{"filename": ...}} naming the Arrow '
            "files of the folder, as Dataset.save_to_disk writes it"
        )
    files = tuple(folder / str(name) for name in names)
    for file in files:
        if not file.is_file():
            raise VaelabError(f"{state_path}: lists {file.name}, which is not in {folder}")
    return files


def _plain_name(name: object) -> bool:
    """A file or folder name inside its folder: no separator, not '.' or '..', not hidden."""
    return isinstance(name, str) and bool(name) and Path(name).name == name and name[0] != "."


# ---------------------------------------------------------------- folders of files


def _named_files(root: Path) -> Layout:
    """A folder of data files, each of the split its path names (all of one split when none do)."""
    files = _table_files(root)
    if not files:
        raise VaelabError(
            f"{root}: no .parquet or .arrow files, and no dataset saved by datasets' "
            f"save_to_disk ({STATE_FILE} or {DICT_FILE})"
        )
    named = {file: split_of(str(file.relative_to(root))) for file in files}
    if not any(named.values()):
        return Layout(root, {"": Split("", root, tuple(files))})
    unnamed = [file for file, split in named.items() if not split]
    if unnamed:
        raise VaelabError(
            f"{unnamed[0]}: names no split (train, test, validation) while other files do (such "
            f"as {next(f for f in files if named[f]).name}); name every file's split or none"
        )
    splits = {}
    for split in _SPLIT_WORDS:
        chosen = tuple(file for file in files if named[file] == split)
        if chosen:
            splits[split] = Split(split, f"{root} ({split} split)", chosen)
    return Layout(root, splits)


def _table_files(root: Path) -> list[Path]:
    """The .parquet and .arrow files under `root` (down to _DEPTH folders), sorted by path."""
    found: list[Path] = []
    folders = [(root, 0)]
    while folders:
        folder, depth = folders.pop()
        names, subfolders = _entries(folder)
        found += [folder / name for name in names if is_table_file(name)]
        if len(found) > _MAX_FILES:
            raise VaelabError(f"{root}: more than {_MAX_FILES:,} data files; give one folder")
        if depth < _DEPTH:
            folders += [(folder / sub, depth + 1) for sub in subfolders]
    return sorted(found, key=lambda file: file.relative_to(root).parts)


def _entries(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the files and of the subfolders of `folder`, hidden ones left out."""
    files: list[str] = []
    folders: list[str] = []
    try:
        with os.scandir(folder) as scan:
            for entry in scan:
                if entry.name.startswith("."):
                    continue
                (folders if entry.is_dir() else files).append(entry.name)
    except OSError as exc:
        raise read_error(folder, exc, "a folder of Parquet or Arrow files") from None
    return files, folders
