"""Folders of image files (PNG, JPEG, BMP, TIFF, GIF, WebP, PNM), read through Pillow.

A folder holds its images directly (unlabelled) or in one subfolder per class (the class names
are the sorted subfolder names, as in torchvision's ImageFolder); `train/` and `test/`
subfolders, when both are there, are the two splits. Files are read in a fixed order: classes
sorted, files sorted by name within each. Hidden files and files of other types are skipped, and
a note names what is not read: folders inside class folders, files that are not images, hidden
files named like images, and what lies beside the `train/` and `test/` folders read.

Every image becomes 8-bit grey (1 channel) or RGB (3): '1' and 'L' are grey, 16-bit grey
('I;16') is scaled to 8 bits (v / 257, rounded), 'LA' loses its alpha, 'P' (palette) and CMYK,
YCbCr, LAB and HSV become RGB, RGBA's alpha is dropped (a note says so, once); 32-bit integer
and float images ('I', 'F') are refused, their range being unknown. Images of several sizes or
channel counts are refused unless `DataConfig.image_size` resizes them all, with Pillow's
BILINEAR filter: on shrinking it averages over the whole footprint (no aliasing), it does not
ring the way LANCZOS does at sharp edges, and it is torchvision's default, so resized images
match a torchvision pipeline's.

Reads are bounded: each file as `vaelab._io.read_bytes` bounds it, each image to Pillow's
`Image.MAX_IMAGE_PIXELS`, and all the decoded images together to the read limit
(``$VAELAB_MAX_READ_BYTES``, default 4 GiB); `image_size` before any image is decoded
(`vaelab.data.imagefile.check_resized`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab._io import read_error
from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.imagefile import check_resized, decode_all
from vaelab.data.layout import ImageSet, SourceSets, note
from vaelab.errors import VaelabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp",
                  ".pbm", ".pgm", ".ppm", ".pnm")  # fmt: skip
FORMATS_READ = (
    "image folders, .npy, .npz, IDX, CSV (.csv, .csv.gz), Parquet, Arrow (Hugging Face datasets) "
    "or a built-in dataset name"
)


@dataclass(frozen=True)
class Listing:
    """The image files of one split in reading order, their labels (or None) and class names;
    and what was passed over: folders inside class folders, files that are not images, hidden
    files named like images."""

    folder: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]
    nested: tuple[Path, ...] = ()
    others: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()


def load_folder(path: str | Path, test_path: str | Path | None, config: DataConfig) -> Dataset:
    """Read the images of a folder (and of `test_path`, the test set, when given).

    Without `test_path`, `path/train` and `path/test` are the splits when both exist; else the
    test set is a seeded split of the folder (`config.test_split`, `config.split_seed`).
    """
    return read_folder(Path(path), None if test_path is None else Path(test_path), config).dataset(
        config
    )


def folder_files(root: Path, test_path: Path | None) -> tuple[Listing, Listing | None]:
    """The image files of the training and test sets of a folder (see `load_folder`), after a
    note of what is not read (`tell_unread`)."""
    train_dir, test_dir = _split_folders(root, test_path)
    train = list_images(train_dir)
    test = None if test_dir is None else list_images(test_dir)
    tell_unread(root, [train] + ([] if test is None else [test]), test_path)
    return train, None if test is None else _test_labels(train, test)


def tell_unread(root: Path, listings: list[Listing], test_path: Path | None) -> None:
    """One note naming what a folder holds that is not read, and why: folders inside class
    folders, files that are not images, hidden image files, and what lies beside the split
    folders read. Hidden files of other kinds (.DS_Store) and hidden folders pass unsaid."""
    parts = []
    for paths, what in (
        ("nested", "folder(s) inside class folders (a class's images are read from its folder "
         "itself)"),
        ("others", "file(s) that are not images"),
        ("hidden", "hidden file(s) named like images"),
    ):  # fmt: skip
        found = [path for listing in listings for path in getattr(listing, paths)]
        if found:
            parts.append(f"{len(found):,} {what}, e.g. {found[0]}")
    read = [listing.folder for listing in listings]
    beside = _beside_splits(root, read) if read[0] != root else []
    if beside:
        shown = ", ".join(str(path) for path in beside[:3]) + (", ..." if len(beside) > 3 else "")
        named = " and ".join(f"{folder}" for folder in read)
        parts.append(f"{shown} beside the splits read ({named})")
    if test_path is not None and read[0] == root / "train" and (root / "test").is_dir():
        parts.append(f"{root / 'test'} (the test set is {test_path})")
    if parts:
        note(f"{root}: not read: {'; '.join(parts)}")


def _beside_splits(root: Path, read: list[Path]) -> list[Path]:
    """What `root` holds besides its split folders `read` (hidden entries aside)."""
    images, folders, others, _ = _entries(root)
    kept = [root / name for name in (*folders, *images, *others)]
    return sorted(path for path in kept if path not in read and path != root / "test")


def read_folder(
    root: Path,
    test_path: Path | None,
    config: DataConfig,
    out: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> SourceSets:
    """The decoded sets of a folder: in memory, or written into the .npy file `out` (training
    images first) and mapped from it. `progress` is told the images decoded."""
    train, test = folder_files(root, test_path)
    files = train.files + (() if test is None else test.files)
    size = tuple(config.image_size) if config.image_size else None
    check_resized(len(files), size, root, out)
    pixels = decode_all(files, root, size, out=out, progress=progress)
    train_set = ImageSet(pixels[: len(train.files)], _labels(train), str(train.folder), file=out)
    test_set = None
    if test is not None:
        test_set = ImageSet(pixels[len(train.files) :], _labels(test), str(test.folder), file=out)
    source = str(root) if test_path is None else f"{root} (test: {test_path})"
    return SourceSets(train_set, test_set, source, "folder", train.classes)


def _split_folders(root: Path, test_path: Path | None) -> tuple[Path, Path | None]:
    for folder in (root, test_path):
        if folder is not None and not folder.is_dir():
            what = "not found" if not folder.exists() else "is not a folder"
            raise VaelabError(f"{folder}: {what}, expected a folder of images")
    has = {name: (root / name).is_dir() for name in ("train", "test")}
    train_dir = root / "train" if has["train"] else root
    if test_path is not None:
        return train_dir, test_path
    return train_dir, root / "test" if has["train"] and has["test"] else None


def _labels(listing: Listing) -> torch.Tensor | None:
    return None if listing.labels is None else torch.tensor(listing.labels, dtype=torch.int64)


def _test_labels(train: Listing, test: Listing) -> Listing:
    """`test` labelled by the training set's classes (it may lack some, never add one)."""
    if (train.labels is None) != (test.labels is None):
        flat, classed = (test, train) if test.labels is None else (train, test)
        raise VaelabError(
            f"{flat.folder}: holds its images directly, but {classed.folder} has class folders; "
            "give both the same layout"
        )
    if test.labels is None:
        return test
    unknown = [name for name in test.classes if name not in train.classes]
    if unknown:
        raise VaelabError(
            f"{test.folder}: class folder {unknown[0]}/ is not among the training classes "
            f"({', '.join(train.classes[:8])}{', ...' if len(train.classes) > 8 else ''})"
        )
    index = {name: i for i, name in enumerate(train.classes)}
    labels = tuple(index[test.classes[label]] for label in test.labels)
    return Listing(test.folder, test.files, labels, train.classes)


def _entries(folder: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """(image files, subfolders, other files, hidden image files) of `folder`, each sorted by
    name; other hidden entries are left out."""
    images, folders, others, hidden = [], [], [], []
    try:
        with os.scandir(folder) as scan:
            for entry in scan:
                is_dir = entry.is_dir()
                named_like_image = not is_dir and entry.name.lower().endswith(IMAGE_SUFFIXES)
                if entry.name.startswith("."):
                    if named_like_image:
                        hidden.append(entry.name)
                elif is_dir:
                    folders.append(entry.name)
                elif named_like_image:
                    images.append(entry.name)
                else:
                    others.append(entry.name)
    except OSError as exc:
        raise read_error(folder, exc, "a folder of images") from None
    return sorted(images), sorted(folders), sorted(others), sorted(hidden)


def list_images(folder: Path) -> Listing:
    """The images of `folder`: its own files (unlabelled), or one subfolder per class."""
    images, folders, others, hidden = _entries(folder)
    if images and folders:
        raise VaelabError(
            f"{folder}: holds both images ({images[0]}) and subfolders ({folders[0]}/); put the "
            "images either all in class folders or all in the folder itself"
        )
    passed_over = {
        "others": [folder / name for name in others],
        "hidden": [folder / name for name in hidden],
        "nested": [],
    }
    if images:
        own = tuple(folder / name for name in images)
        return Listing(folder, own, None, (), **_tuples(passed_over))
    if not folders:
        raise VaelabError(f"{folder}: {_no_images(others)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(folders):
        inside, subfolders, rest, hidden_inside = _entries(folder / name)
        if not inside:
            found = f"only subfolders ({subfolders[0]}/)" if subfolders else _no_images(rest)
            raise VaelabError(f"{folder / name}: class folder holds no images; {found}")
        files.extend(folder / name / file for file in inside)
        labels.extend([label] * len(inside))
        for key, names in (("nested", subfolders), ("others", rest), ("hidden", hidden_inside)):
            passed_over[key] += [folder / name / entry for entry in names]
    return Listing(folder, tuple(files), tuple(labels), tuple(folders), **_tuples(passed_over))


def _tuples(lists: dict[str, list[Path]]) -> dict[str, tuple[Path, ...]]:
    return {key: tuple(paths) for key, paths in lists.items()}


def _no_images(others: list[str]) -> str:
    if not others:
        return "empty folder, no images"
    return (
        f"no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...), only {len(others)} other file(s) "
        f"such as {others[0]}; vaelab reads {FORMATS_READ}"
    )
