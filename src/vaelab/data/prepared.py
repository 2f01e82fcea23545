"""Sources that must be decoded (image folders, IDX files, CSV files, .npz files with compressed
arrays, Parquet and Arrow files) prepared once: their images written as one .npy file in their
stored type (uint8 for decoded images), with the labels, under the cache folder, and
memory-mapped from there on every later use while the source is unchanged.

Each prepared source is a folder ``<cache>/<key>/`` holding ``images.npy`` (the training images,
then the test images), ``train-labels.npy`` and ``test-labels.npy`` (when labelled) and
``manifest.json``: the source files' paths, sizes, modification times and
SHA-256, and where each split lies in the arrays. The key is a hash of the source's resolved
paths and the reading options that change the decoded images (`image_size`, `labels`,
`array_keys`, `columns`). A source file whose size or time changed, one added or removed,
rebuilds it (a time changed with the same bytes, by the SHA-256, does not). A preparation is
built in a temporary folder and renamed into place whole, under a lock: a killed one leaves
nothing that is later trusted. The cache folder is ``$VAELAB_CACHE``, else
``$XDG_CACHE_HOME/vaelab/prepared`` (``~/.cache`` by default); where it cannot be written the
source is read into memory instead, with a note.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._io import (
    atomic_write_text,
    parse_json,
    read_error,
    read_text,
    sha256_file,
    size_words,
)
from vaelab._outputs import check_output_folder
from vaelab._resources import require_disk
from vaelab.config import DataConfig
from vaelab.data.layout import ImageSet, SourceSets, note, notes_kept, require_same_shape
from vaelab.data.npyfile import read_npy
from vaelab.errors import VaelabError

CACHE_ENV = "VAELAB_CACHE"
FORMAT = "vaelab-prepared-1"
MANIFEST = "manifest.json"
IMAGES = "images.npy"
_KEY_LENGTH = 24
PREPARED_HERE: set[Path] = set()  # the images files this process prepared (the others it reused)
_SPLITS = ("train", "test")


def cache_root() -> Path:
    """Where prepared sources are kept: $VAELAB_CACHE, else $XDG_CACHE_HOME/vaelab/prepared."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab" / "prepared"


@dataclass(frozen=True)
class Source:
    """A source that is read by decoding: its kind ('folder', 'idx', 'csv', 'npz', 'arrow'), its
    paths, and the reading options that change what it decodes to."""

    kind: str
    path: Path
    test: Path | None
    config: DataConfig

    def key(self) -> str:
        """The name of its folder in the cache."""
        described = {
            "format": FORMAT, "kind": self.kind, "source": str(self.path.resolve()),
            "test": None if self.test is None else str(self.test.resolve()),
            "image_size": list(self.config.image_size), "labels": self.config.labels,
            "array_keys": list(self.config.array_keys),
        }  # fmt: skip
        if self.config.columns:  # only when given: the keys of earlier preparations stay valid
            described["columns"] = list(self.config.columns)
        text = json.dumps(described, sort_keys=True).encode()
        return hashlib.sha256(text).hexdigest()[:_KEY_LENGTH]

    def files(self) -> list[Path]:
        """The files it reads, in reading order."""
        if self.kind == "folder":
            from vaelab.data.folder import folder_files

            listings = [s for s in folder_files(self.path, self.test) if s is not None]
            return [file for listing in listings for file in listing.files]
        if self.kind == "idx":
            from vaelab.data.idx_files import idx_source_files

            return idx_source_files(self.path, self.test, self.config)
        if self.kind == "arrow":
            from vaelab.data.arrowfile import arrow_files

            return arrow_files(self.path, self.test)
        return [self.path] + ([] if self.test is None else [self.test])

    def read(self, out: Path | None, progress: Callable[[int], None] | None) -> SourceSets:
        """Its sets, decoded (a folder's and a Parquet or Arrow source's straight into the .npy
        file `out` when given)."""
        if self.kind == "folder":
            from vaelab.data.folder import read_folder

            return read_folder(self.path, self.test, self.config, out, progress)
        if self.kind == "arrow":
            from vaelab.data.arrowfile import read_arrow

            return read_arrow(self.path, self.test, self.config, out, progress)
        if self.kind == "idx":
            from vaelab.data.idx_files import read_idx_files

            return read_idx_files(self.path, self.test, self.config)
        if self.kind == "csv":
            from vaelab.data.csvfile import read_csv_source

            return read_csv_source(self.path, self.test)
        from vaelab.data.arrays import read_array_file

        return read_array_file(self.path, self.test, self.config)


@dataclass(frozen=True)
class Prepared:
    """A prepared source: its folder in the cache, its images and their bytes, and whether this
    call found it ready (True) or prepared it (False)."""

    folder: Path
    images: int
    nbytes: int
    reused: bool
    sets: SourceSets


def prepare(
    source: Source, progress: bool = False, say: Callable[[str], None] | None = None
) -> Prepared:
    """`source` prepared in the cache (reused while its files are unchanged), its sets mapped.

    `say` is told, once, when the source is being prepared; `progress` draws a bar on stderr.
    """
    check_output_folder(cache_root(), f"${CACHE_ENV}")
    folder = cache_root() / source.key()
    with _locked(folder):
        stamps = [_stamp(path) for path in _files(source)]
        manifest = _fresh_manifest(folder, stamps)
        reused = manifest is not None
        if manifest is not None:  # its notes, told when it was prepared, told again
            notes = manifest.get("notes")
            for text in notes if isinstance(notes, list) else []:
                note(str(text))
        else:
            if say is not None:
                say(f"preparing {source.path} once into {folder}")
            manifest = _build(source, folder, stamps, progress)
            PREPARED_HERE.add(folder / IMAGES)
        sets = _mapped_sets(folder, manifest, source)
    parts = [part.pixels for part in (sets.train, sets.test) if part is not None]
    nbytes = sum(part.numel() * part.element_size() for part in parts)
    return Prepared(folder, sum(len(part) for part in parts), nbytes, reused, sets)


def read_prepared(source: Source) -> SourceSets:
    """The sets of `source`: mapped from the cache, prepared first when needed (with a progress
    bar on a terminal; a run then says where its images are mapped from); read into memory
    (with a note) where the cache cannot be written."""
    check_output_folder(cache_root(), f"${CACHE_ENV}")
    try:
        cache_root().mkdir(parents=True, exist_ok=True)
        probe = cache_root() / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        note(
            f"cannot write the cache {cache_root()} ({exc.strerror or exc}); reading "
            f"{source.path} into memory instead (set ${CACHE_ENV} to a writable folder)"
        )
        return _read_in_memory(source)
    return prepare(source, progress=sys.stderr.isatty()).sets


def _read_in_memory(source: Source) -> SourceSets:
    return source.read(None, None)


def _files(source: Source) -> list[Path]:
    """The files of `source`, listed without a note (told when it is read, kept in the manifest)."""
    with notes_kept(quiet=True):
        return source.files()


# ---------------------------------------------------------------- freshness


def _stamp(path: Path) -> dict[str, Any]:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise read_error(path, exc, "a file of the source") from None
    # absolute, not resolved: resolving walks every folder of every path, a second per 20,000
    # files, and the source's own key already holds its resolved path
    return {"path": os.path.abspath(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _fresh_manifest(folder: Path, stamps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest of `folder` when it is whole and its source files are those of `stamps`."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return None
    recorded = manifest["files"]
    if [(r["path"], r["size"]) for r in recorded] != [(s["path"], s["size"]) for s in stamps]:
        return None
    for old, new in zip(recorded, stamps):
        if old["mtime_ns"] != new["mtime_ns"] and old["sha256"] != sha256_file(Path(new["path"])):
            return None
    return manifest


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The parsed manifest of a prepared folder, or None when it is missing or not vaelab's."""
    try:
        manifest = parse_json(read_text(folder / MANIFEST), folder / MANIFEST)
    except VaelabError:
        return None
    keys = {"format", "files", "splits", "source", "kind", "class_names"}
    if not isinstance(manifest, dict) or not keys <= set(manifest):
        return None
    if manifest["format"] != FORMAT or not isinstance(manifest["files"], list):
        return None
    return manifest


# ---------------------------------------------------------------- building


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the lock of the prepared `folder`: one process builds it, the others wait."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _build(
    source: Source, folder: Path, stamps: list[dict[str, Any]], progress: bool
) -> dict[str, Any]:
    """Decode `source` into a temporary folder, then rename it over `folder` whole."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # cut short earlier (lock held)
        shutil.rmtree(stale, ignore_errors=True)
    temp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    temp.mkdir()
    try:
        manifest = _write(source, temp, stamps, progress)
        _replace_folder(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


def _write(
    source: Source, temp: Path, stamps: list[dict[str, Any]], progress: bool
) -> dict[str, Any]:
    bar = _bar(source, progress)
    try:
        with notes_kept() as told:
            sets = source.read(temp / IMAGES, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    require_same_shape(sets.train, sets.test)
    parts = [s for s in (sets.train, sets.test) if s is not None]
    if sets.train.file != temp / IMAGES:
        _write_images(temp / IMAGES, parts, source.path)
    files = [{**stamp, "sha256": sha256_file(Path(stamp["path"]))} for stamp in stamps]
    splits, start = [], 0
    for name, part in zip(_SPLITS, parts):
        stop = start + len(part.pixels)
        labels = None
        if part.labels is not None:
            labels = f"{name}-labels.npy"
            np.save(temp / labels, part.labels.numpy().astype(np.int64))
        splits.append({
            "name": name, "start": start, "stop": stop, "where": _portable(part.where, source),
            "labels": labels, "labels_where": _portable(part.labels_where, source),
            "alpha_dropped": part.alpha_dropped,
        })  # fmt: skip
        start = stop
    manifest = {
        "format": FORMAT, "kind": source.kind, "source": sets.source, "format_name": sets.format,
        "class_names": list(sets.class_names), "splits": splits, "files": files, "notes": told,
    }  # fmt: skip
    atomic_write_text(temp / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _write_images(path: Path, parts: list[ImageSet], source: Path) -> None:
    """The images of `parts` one after the other in one .npy file, channel-major, in blocks."""
    first = parts[0].pixels
    count = sum(len(part.pixels) for part in parts)
    needed = count * first[0].numel() * first.element_size()
    require_disk(path.parent, needed, f"{source}: preparing {count:,} images")
    dtype = torch.empty(0, dtype=first.dtype).numpy().dtype
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(count, *first.shape[1:]))
    start = 0
    for part in parts:
        block = max(1, (32 << 20) // max(part.pixels[0].numel() * first.element_size(), 1))
        for begin in range(0, len(part.pixels), block):
            rows = part.pixels[begin : begin + block]
            out[start + begin : start + begin + len(rows)] = rows.contiguous().numpy()
        start += len(part.pixels)
    out.flush()
    del out


def _replace_folder(temp: Path, folder: Path) -> None:
    """Put `temp` where `folder` is; an earlier `folder` is renamed aside first, then removed."""
    old = folder.parent / f".{folder.name}.{os.getpid()}.old.tmp"
    if folder.exists():
        folder.rename(old)
    temp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _bar(source: Source, progress: bool) -> Any:
    if not progress or source.kind not in ("folder", "arrow"):
        return None
    from tqdm import tqdm

    if source.kind == "arrow":
        from vaelab.data.arrowfile import arrow_rows

        total = arrow_rows(source.path, source.test)
    else:
        total = len(_files(source))
    return tqdm(total=total, desc=f"preparing {source.path.name}", unit="img")


# ---------------------------------------------------------------- reading


def _mapped_sets(folder: Path, manifest: dict[str, Any], source: Source) -> SourceSets:
    """The sets a manifest describes, their images and labels mapped from the folder, named by
    the paths `source` gives them now."""
    from vaelab.data.pixels import pixel_storage

    pixels = pixel_storage(read_npy(folder / IMAGES), str(folder / IMAGES))
    sets: dict[str, ImageSet] = {}
    for split in manifest["splits"]:
        rows = slice(int(split["start"]), int(split["stop"]))
        labels = None if split["labels"] is None else _labels(folder / split["labels"])
        sets[split["name"]] = ImageSet(
            pixels[rows], labels, str(_named(split["where"], source)), bool(split["alpha_dropped"]),
            _named(split["labels_where"], source), folder / IMAGES,
        )  # fmt: skip
    if "train" not in sets or pixels.ndim != 4:
        raise VaelabError(f"{folder}: a damaged preparation; remove the folder to prepare again")
    named = str(source.path) if source.test is None else f"{source.path} (test: {source.test})"
    return SourceSets(
        sets["train"], sets.get("test"), named, str(manifest["format_name"]),
        tuple(manifest["class_names"]),
    )  # fmt: skip


def _portable(where: str | None, source: Source) -> list[str] | None:
    """`where` (a path of the source, in messages) as [which path it starts with, the rest], so
    that it names the source as a later call gives it (from another working directory)."""
    if where is None:
        return None
    for base, path in (("test", source.test), ("source", source.path)):
        if path is not None and where.startswith(str(path)):
            return [base, where[len(str(path)) :]]
    return ["", where]


def _named(where: Any, source: Source) -> str | None:
    if where is None:
        return None
    base, rest = where
    path = {"test": source.test, "source": source.path}.get(base)
    return f"{path}{rest}" if path is not None else str(rest)


def _labels(path: Path) -> torch.Tensor:
    """Labels mapped from a prepared folder (int64, read-only: vaelab never writes to them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(read_npy(path))


def describe(prepared: Prepared) -> str:
    """One line for `vaelab prepare`: what is prepared, where, and its size."""
    verb = "up to date" if prepared.reused else "prepared"
    return (
        f"{verb}: {prepared.images:,} images ({size_words(prepared.nbytes)}) in {prepared.folder}"
    )
