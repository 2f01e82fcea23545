"""IDX files of any name: which file of a folder holds what, told by headers and names.

A file is an IDX file when its header says so (gzip or raw); a file whose name contains 'idx' or
'ubyte' must be one, and is refused in one line when it is not. Its header tells images
(3 dimensions) from labels (1 dimension); its name tells training ('train') from test ('t10k',
'test') files. An images file and a labels file belong together when their names agree once the
split, 'images'/'labels' and 'idx3'/'idx1' are set aside (`train-images-idx3-ubyte` and
`train-labels-idx1-ubyte`; `emnist-letters-train-images-...` and `emnist-letters-train-labels-...`),
or when each is the only one of its kind. A file and its gzipped copy count once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.idx import idx_header, read_idx, read_idx_images, read_idx_labels
from vaelab.data.layout import ImageSet, SourceSets, note
from vaelab.errors import VaelabError

_IDX_NAME = re.compile(r"idx|ubyte")
_TRAIN = re.compile(r"(?<![a-z])train")
_TEST = re.compile(r"(?<![a-z])(t10k|test)")
_KEY_PARTS = (
    (re.compile(r"(?<![a-z])(training|train|t10k|testing|test)(?![a-z])"), "{split}"),
    (re.compile(r"(?<![a-z])(images|image|imgs|img|labels|label|lbls|lbl)(?![a-z])"), "{kind}"),
    (re.compile(r"idx[0-9]"), "idx"),
)
_LABEL_NAME = re.compile(r"(?<![a-z])(labels|label|lbls|lbl)(?![a-z])")
_MAX_ENTRIES = 10_000  # files looked at in one folder
_SHOWN = 8


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a folder: images or labels, of which split (None: its name does not say)."""

    path: Path
    kind: str  # 'images' or 'labels'
    split: str | None  # 'train', 'test' or None
    key: str  # the name without split, kind and compression

    def describe(self) -> str:
        """How a listing of what was found shows it."""
        return f"{self.path.name} ({self.split or 'no split'} {self.kind})"


@dataclass(frozen=True)
class SplitFiles:
    """The images file of one split, and its labels file when there is one."""

    images: IdxFile
    labels: IdxFile | None


def split_of(name: str) -> str | None:
    """'train' or 'test' as the file name says; None when it says neither, or both."""
    lower = name.lower()
    train, test = bool(_TRAIN.search(lower)), bool(_TEST.search(lower))
    return "train" if train and not test else "test" if test and not train else None


def _key(name: str) -> str:
    key = name.lower().removesuffix(".gz")
    for pattern, word in _KEY_PARTS:
        key = pattern.sub(word, key)
    return key


def classify(path: Path, strict: bool = True) -> IdxFile | None:
    """`path` as an IdxFile; None when it is not an IDX file and its name does not claim to be
    one (or, unless `strict`, when it cannot be read as one)."""
    claims = bool(_IDX_NAME.search(path.name.lower()))
    try:
        header = idx_header(path)
        if header is None and claims and strict:
            read_idx(path)  # says what is wrong with it
            raise VaelabError(f"{path}: not an IDX file (bad magic number)")
    except VaelabError:
        if strict and claims:
            raise
        return None
    if header is None:
        return None
    dims = len(header[1])
    if dims not in (1, 3):
        if strict and claims:
            raise VaelabError(
                f"{path}: IDX data of shape {header[1]} is neither images (N x H x W) nor "
                "labels (N)"
            )
        return None
    return IdxFile(path, "images" if dims == 3 else "labels", split_of(path.name), _key(path.name))


def scan(folder: Path, strict: bool = True, labels: bool = True) -> list[IdxFile]:
    """The IDX files of `folder`, in name order; of a file and its .gz copy, the raw one. Without
    `labels`, files named as labels are passed over unread."""
    try:
        entries = sorted(folder.iterdir())[:_MAX_ENTRIES]
    except OSError as exc:
        raise VaelabError(f"{folder}: cannot list the folder ({exc.strerror})") from None
    names = {entry.name for entry in entries}
    found, unread = [], []
    for entry in entries:
        if entry.name.endswith(".gz") and entry.name.removesuffix(".gz") in names:
            continue  # torchvision keeps both; the raw copy reads faster
        if entry.is_dir() or (not labels and _LABEL_NAME.search(entry.name.lower())):
            continue
        try:
            idx = classify(entry, strict or bool(_IDX_NAME.search(entry.name.lower())))
        except VaelabError as error:
            if strict:
                raise
            unread.append(str(error))  # beside a file named by the user: said, not fatal
            continue
        if idx is not None:
            found.append(idx)
    if unread:
        note(f"{folder}: not read: {len(unread)} file(s) named like IDX files, e.g. {unread[0]}")
    return found


def idx_folder(path: Path, labels: bool = True) -> tuple[Path, list[IdxFile]]:
    """The folder of IDX files `path` names: `path` itself, its raw/, or its only <Name>/raw/
    (torchvision's layout), with the files found there."""
    files = scan(path, labels=labels)
    if files:
        return path, files
    if (path / "raw").is_dir() and (files := scan(path / "raw", labels=labels)):
        return path / "raw", files
    try:
        candidates = sorted(sub / "raw" for sub in path.iterdir() if (sub / "raw").is_dir())
    except OSError as exc:
        raise VaelabError(f"{path}: cannot list the folder ({exc.strerror})") from None
    found = [(raw, files) for raw in candidates if (files := scan(raw, labels=labels))]
    if len(found) == 1:
        return found[0]
    if found:
        raise VaelabError(
            f"{path}: holds the IDX files of several datasets "
            f"({', '.join(str(raw) for raw, _ in found)}); give one of them"
        )
    raise VaelabError(f"{path}: no IDX files found (looked in it, in raw/ and in */raw/)")


def _listing(files: list[IdxFile]) -> str:
    shown = ", ".join(f.describe() for f in files[:_SHOWN])
    return shown + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")


def pick(
    files: list[IdxFile], kind: str, split: str | None, key: str, where: Path
) -> IdxFile | None:
    """The one file of `kind` and `split`: the one whose name matches `key`, else the only one;
    None when there is none, one line listing them when several could be meant."""
    candidates = [f for f in files if f.kind == kind and f.split == split]
    same = [f for f in candidates if f.key == key]
    if len(same) == 1:
        return same[0]
    if len(candidates) == 1 and not same:
        return candidates[0]
    if not candidates:
        return None
    raise VaelabError(
        f"{where}: several {split or 'unsplit'} {kind} files could be meant: "
        f"{_listing(candidates)}; give the images file itself"
    )


def _images_in(files: list[IdxFile], folder: Path, split: str) -> IdxFile:
    """The images file of `split` in `folder` (or its only images file without a split)."""
    chosen = pick(files, "images", split, "", folder) or pick(files, "images", None, "", folder)
    if chosen is None:
        named = "'train'" if split == "train" else "'t10k' or 'test'"
        raise VaelabError(
            f"{folder}: no {split} images (an IDX file of N x H x W named with {named}); "
            f"found {_listing(files)}"
        )
    return chosen


def _given_file(path: Path, labels: bool) -> tuple[IdxFile, list[IdxFile]]:
    """An images file named by the user, and the IDX files beside it."""
    given = classify(path)
    if given is None:
        read_idx(path)
        raise VaelabError(f"{path}: not an IDX file (bad magic number)")
    if given.kind != "images":
        raise VaelabError(f"{path}: an IDX labels file; give the images file or its folder")
    siblings = [f for f in scan(path.parent, False, labels) if f.path.name != path.name]
    return given, siblings


def _split_files(images: IdxFile, files: list[IdxFile], folder: Path, labels: bool) -> SplitFiles:
    found = pick(files, "labels", images.split, images.key, folder) if labels else None
    return SplitFiles(images, found)


def find_splits(
    path: Path, test_path: Path | None, labels: bool
) -> tuple[SplitFiles, SplitFiles | None]:
    """The training files `path` names and the test files (beside them, or `test_path`'s); the
    test split is None when there are no test files."""
    train_images, files, folder = _images_named_by(path, labels, "train")
    if not path.is_dir() and train_images.split == "test":
        raise VaelabError(
            f"{path}: its name says it holds test images; give the training images "
            "(the test files are found beside them)"
        )
    train = _split_files(train_images, files, folder, labels)
    test = _test_split(train_images, files, folder, labels) if test_path is None else None
    if path.is_dir():
        _tell_unread(folder, files, [train, test])
    if test_path is not None:
        return train, _test_from(test_path, labels)
    return train, test


def _test_split(
    train_images: IdxFile, files: list[IdxFile], folder: Path, labels: bool
) -> SplitFiles | None:
    """The test files beside the training images, when their names say there are some."""
    if train_images.split is None:
        return None
    test_images = pick(files, "images", "test", train_images.key, folder)
    return None if test_images is None else _split_files(test_images, files, folder, labels)


def _tell_unread(folder: Path, files: list[IdxFile], read: list[SplitFiles | None]) -> None:
    """A note naming the IDX files of a folder that are not read (another split, another set)."""
    chosen = set()
    for split in read:
        if split is not None:
            chosen |= {split.images.path} | ({split.labels.path} if split.labels else set())
    unread = [f for f in files if f.path not in chosen]
    if unread:
        note(f"{folder}: not read: {_listing(unread)}")


def _test_from(path: Path, labels: bool) -> SplitFiles:
    images, files, folder = _images_named_by(path, labels, "test")
    return _split_files(images, files, folder, labels)


def _images_named_by(path: Path, labels: bool, split: str) -> tuple[IdxFile, list[IdxFile], Path]:
    """The images file `path` names (a folder: its `split` images), the IDX files beside it,
    and their folder."""
    if path.is_dir():
        folder, files = idx_folder(path, labels)
        return _images_in(files, folder, split), files, folder
    images, files = _given_file(path, labels)
    return images, files, path.parent


def _read(files: SplitFiles) -> ImageSet:
    path = files.images.path
    images = read_idx_images(path)
    if "emnist" in path.name.lower():
        images = images.transpose(0, 2, 1)  # EMNIST stores each image column by column
    if files.labels is None:
        return ImageSet.of_grey(images, None, str(path), None)
    labels = read_idx_labels(files.labels.path, path, len(images))
    return ImageSet.of_grey(images, labels, str(path), str(files.labels.path))


def load_idx_files(path: Path, test_path: Path | None, config: DataConfig) -> Dataset:
    """The Dataset of `vaelab.data.idx.load_idx_source` (which see)."""
    return read_idx_files(path, test_path, config).dataset(config)


def idx_source_files(path: Path, test_path: Path | None, config: DataConfig) -> list[Path]:
    """The IDX files a source reads: images, and labels where there are some."""
    found: list[Path] = []
    for split in find_splits(path, test_path, config.labels):
        if split is not None:
            found += [split.images.path] + ([] if split.labels is None else [split.labels.path])
    return found


def read_idx_files(path: Path, test_path: Path | None, config: DataConfig) -> SourceSets:
    """The sets of an IDX source, read into memory."""
    train, test = find_splits(path, test_path, config.labels)
    train_set = _read(train)
    test_set = None if test is None else _read(test)
    return SourceSets(train_set, test_set, str(path), "idx")
