"""Files vaelab writes at a path the user names: one policy for every command that writes.

- An output is recognised by the record vaelab keeps beside it: ``.vaelab-outputs.json`` in the
  output's folder names each file vaelab wrote there, its kind (a compare page, samples, an
  export) and its SHA-256. A file is vaelab's output of a kind only while the record says so and
  its bytes still match; anything else (a data file, a run's weights, a page edited by hand, a
  file an earlier version wrote) is never replaced, with or without overwrite.
- An output of the same kind is replaced only with overwrite=True, and atomically.
- Nothing is written inside a run directory (a folder holding vaelab's config.json, weights or
  checkpoint) but that run's own files (`check_run_file`, `check_run_folder`).
- A directory where a file is wanted is refused, and so is a file where a folder is wanted.
- Checking, writing and recording happen under a lock on the output's folder
  (`output_folder_lock`): two vaelab processes writing into one folder take turns, so neither
  replaces a file the other has just written nor drops the other's entry from the record.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab._io import (
    TEXT_LIMIT,
    atomic_write_bytes,
    atomic_write_text,
    parse_json,
    read_bytes,
    sha256_file,
)
from vaelab.errors import VaelabError

RECORD_FILE = ".vaelab-outputs.json"
RECORD_FORMAT = "vaelab-outputs-1"
# The files whose presence makes a folder a run directory (`vaelab.rundir` writes them); a
# config.json alone counts only when it holds vaelab's sections.
_RUN_WEIGHTS = ("model.safetensors", "last.safetensors", "checkpoint.safetensors")
_RUN_CONFIG = "config.json"
_RUN_SECTIONS = ("model", "data", "train")


@dataclass(frozen=True)
class OutputKind:
    """A kind of file vaelab writes at a path the user names: its name in the record, what it is
    in words ('a compare page'), and the suffixes it is written as."""

    name: str
    what: str
    suffixes: tuple[str, ...]


COMPARE_PAGE = OutputKind("compare-page", "a compare page", (".html", ".htm"))
SAMPLES = OutputKind("samples", "a samples file", (".png", ".npy"))
EXPORT = OutputKind("export", "an export file", (".onnx", ".pt", ".json"))


# ---------------------------------------------------------------- checks before writing


def check_output(
    path: str | Path, kind: OutputKind, overwrite: bool = False, option: str = "out"
) -> bool:
    """Refuse in one line a write of `kind` at `path` that the policy forbids; True when it
    replaces an earlier output of that kind (only with `overwrite`).

    `option` is the API's name of the parameter that gave `path` (the command line shows its
    flag).
    """
    path = Path(path)
    if path.is_dir():
        raise VaelabError(
            f"{path}: is a directory; give {option} a file name such as "
            f"{path / ('out' + kind.suffixes[0])}",
            parameters=(option,),
        )
    check_output_folder(path.parent, option)
    check_record_file(path.parent)
    if path.suffix.lower() not in kind.suffixes:
        raise VaelabError(
            f"{path}: {kind.what} must end in {' or '.join(kind.suffixes)}; give {option} such "
            "a name",
            parameters=(option,),
        )
    if not (path.exists() or path.is_symlink()):
        return False
    if not is_recorded_output(path, kind):
        raise VaelabError(
            f"{path}: exists and is not {kind.what} vaelab wrote, so it is left as it is "
            f"(overwrite=True replaces only vaelab's own outputs); give {option} another name",
            parameters=(option, "overwrite"),
        )
    if not overwrite:
        raise VaelabError(
            f"{path}: already exists; pass overwrite=True to replace it ({kind.what} vaelab wrote)",
            parameters=("overwrite",),
        )
    return True


def check_output_folder(folder: str | Path, option: str = "out") -> None:
    """Refuse a folder to write outputs into that is a file, or lies inside a run directory."""
    folder = Path(folder)
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise VaelabError(f"{folder}: is not a folder, so nothing can be written into it")
    run = run_directory_holding(folder)
    if run is not None:
        itself = run in (folder, Path(os.path.realpath(folder)))
        where = "is a run directory" if itself else f"is inside the run directory {run}"
        raise VaelabError(
            f"{folder}: {where}, which holds only the run's own files; give {option} a path "
            "outside it",
            parameters=(option,),
        )


def check_record_file(folder: str | Path) -> None:
    """Refuse a folder whose record of outputs is something vaelab did not write there (a
    folder, a pipe, a link), before an output is written that could not be recorded."""
    record = Path(folder) / RECORD_FILE
    if record.is_symlink() or (record.exists() and not record.is_file()):
        raise VaelabError(
            f"{record}: is not the file in which vaelab records its outputs in this folder, so "
            "nothing is written here; move it away"
        )


def run_directory_holding(path: str | Path) -> Path | None:
    """The run directory that `path` is or lies in (its nearest), or None."""
    path = Path(path)
    for folder in (path, *path.parents, *Path(os.path.realpath(path)).parents):
        if is_vaelab_run(folder):
            return folder
    return None


def is_vaelab_run(folder: Path) -> bool:
    """Whether `folder` holds a run's weights or checkpoint, or a config.json of vaelab's."""
    if any((folder / name).is_file() for name in _RUN_WEIGHTS):
        return True
    config = folder / _RUN_CONFIG
    if not config.is_file():
        return False
    try:
        raw = parse_json(read_bytes(config, "a JSON file", limit=TEXT_LIMIT), config)
    except VaelabError:
        return False
    return isinstance(raw, dict) and all(name in raw for name in _RUN_SECTIONS)


def require_own_path(path: str | Path, folder: bool, keeps: str) -> None:
    """Refuse, before anything is written or removed there, a path where vaelab keeps a file (or
    a `folder`) of its own that is a symbolic link (vaelab never makes one, and it may lead to a
    user's file) or something else than a file (a folder); `keeps` says what vaelab keeps there
    ('vaelab writes a file of the run')."""
    path = Path(path)
    if path.is_symlink():
        raise VaelabError(f"{path}: is a symbolic link, and {keeps} here; move it away")
    if path.exists() and not (path.is_dir() if folder else path.is_file()):
        kind = "folder" if folder else "file"
        raise VaelabError(f"{path}: is not a {kind}, and {keeps} here; move it away")


def check_run_file(path: str | Path) -> None:
    """Refuse to write a run's own file over something that is not a file of its own: a folder,
    a pipe, or a symbolic link (vaelab never writes one, and a link may lead to a user's file)."""
    require_own_path(path, folder=False, keeps="vaelab writes a file of the run")


def check_run_folder(path: str | Path, what: str, files: Sequence[str] = ()) -> None:
    """Refuse to write a run's own folder (`what`: 'figures') where a file is, or its `files`
    where something else than a file is."""
    path = Path(path)
    require_own_path(path, folder=True, keeps=f"vaelab keeps the run's {what}")
    for name in files:
        check_run_file(path / name)


# ---------------------------------------------------------------- writing and the record


def write_output(
    path: str | Path, kind: OutputKind, payload: bytes, overwrite: bool = False,
    option: str = "out",
) -> Path:  # fmt: skip
    """Write `payload` at `path` atomically, as `check_output` allows, and record it as `kind`."""
    path = Path(path)
    check_output(path, kind, overwrite, option)
    with output_folder_lock(path.parent):
        check_output(path, kind, overwrite, option)  # again: another process may have written
        atomic_write_bytes(path, payload)
        record_outputs([path], kind)
    return path


@contextmanager
def output_folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive flock(2) on `folder` itself while outputs there are checked, written
    and recorded; another process writing into the same folder waits its turn. The lock is on
    the folder's own descriptor, so nothing is left in the folder, and the kernel releases it
    however the process ends."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise VaelabError(f"{folder}: cannot open this folder ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def record_outputs(paths: Sequence[Path], kind: OutputKind) -> None:
    """Record `paths` (files of one folder, just written) in that folder's record as outputs
    of `kind`, each with its SHA-256; entries of files no longer there are dropped."""
    if not paths:
        return
    folder = paths[0].parent
    files = {
        name: entry for name, entry in _read_record(folder).items() if (folder / name).is_file()
    }
    for path in paths:
        files[path.name] = {"kind": kind.name, "sha256": sha256_file(path)}
    record = {"format": RECORD_FORMAT, "files": files}
    atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=1) + "\n")


def is_recorded_output(path: Path, kind: OutputKind) -> bool:
    """Whether `path` is a regular file that its folder's record names as `kind`, unchanged."""
    entry = _read_record(path.parent).get(path.name)
    if not isinstance(entry, dict) or entry.get("kind") != kind.name:
        return False
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return sha256_file(path) == entry.get("sha256")
    except VaelabError:
        return False


def _read_record(folder: Path) -> dict[str, Any]:
    """The files the record in `folder` names; a missing or damaged record names none."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        raw = parse_json(read_bytes(path, "a JSON file", limit=TEXT_LIMIT), path)
    except VaelabError:
        return {}
    if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
        return {}
    files = raw.get("files")
    return files if isinstance(files, dict) else {}
