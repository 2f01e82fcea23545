"""Finding a dataset's files on disk, or downloading them once with every SHA-256 checked.

A dataset is looked up in a folder the user names, then ``$VAELAB_DATA``, the user cache
(``$XDG_CACHE_HOME/vaelab/<name>``, ``~/.cache`` by default) and a Debian-style system folder
(``/usr/share/datasets/<name>``); when none holds its files they are downloaded into the cache.
A download is written to a temporary file beside its destination, read no further than the size
the table gives, and kept only when its SHA-256 matches.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vaelab._io import open_regular
from vaelab.errors import VaelabError

Opener = Callable[[str], object]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One file of a dataset as published: its SHA-256 and its size in bytes."""

    sha256: str
    size: int


def default_cache_dir(name: str = "fashion-mnist") -> Path:
    """Where downloads of dataset `name` go: $XDG_CACHE_HOME/vaelab/<name> (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab" / name


def sha256_file(path: Path, what: str = "a data file") -> str:
    """The SHA-256 of the regular file `path`, read in blocks."""
    sha = hashlib.sha256()
    with open_regular(path, what) as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(block)
    return sha.hexdigest()


def env_dir(name: str, itself: bool = False) -> Path | None:
    """The folder ``$VAELAB_DATA`` names for dataset `name`: its subfolder <name> when there is
    one, else (when `itself`, as for Fashion-MNIST, which it named first) the folder itself."""
    value = os.environ.get("VAELAB_DATA")
    if not value:
        return None
    folder = Path(value) / name
    if folder.is_dir():
        return folder
    return Path(value) if itself else None


def find_located(
    named: Sequence[tuple[str | Path | None, str]],
    cache: Path,
    system: Path,
    missing: Callable[[Path], list[str]],
) -> Path | None:
    """The first folder holding the files (`missing` lists those a folder lacks): the folders
    `named` (path, where it was named) that are given, then `cache`, then `system`; None when only
    a download can bring them. A folder the user names must exist and hold them all.
    """
    for given, origin in named:
        if given:
            directory = Path(given)
            if not directory.is_dir():
                raise VaelabError(
                    f"{directory}: data directory ({origin}) does not exist",
                    parameters=("data_dir",),
                )
            lacking = missing(directory)
            if lacking:
                raise VaelabError(
                    f"{directory}: data directory ({origin}) lacks {', '.join(lacking)}",
                    parameters=("data_dir",),
                )
            return directory
    for directory in (cache, system):
        if directory.is_dir() and not missing(directory):
            return directory
    return None


def download_files(
    target: Path,
    files: Mapping[str, Remote],
    base_url: str,
    opener: Opener | None = None,
    title: str = "the dataset",
    hint: str = "",
) -> Path:
    """Download `files` (name -> Remote) from `base_url` into `target`, each checked before it is
    kept; files already there with the right SHA-256 are not fetched again. `title` and `hint`
    word the refusal when the network cannot be reached."""
    opener = opener or (lambda url: urllib.request.urlopen(url, timeout=60))
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{target}: cannot create the download folder ({exc.strerror})") from None
    for name, remote in files.items():
        destination = target / name
        if destination.is_file() and sha256_file(destination) == remote.sha256:
            continue
        download_verified(opener, base_url + name, destination, remote, title, hint)
    return target


def download_verified(
    opener: Opener,
    url: str,
    destination: Path,
    remote: Remote,
    title: str = "the dataset",
    hint: str = "",
) -> None:
    """Fetch `url` into `destination` when its bytes have `remote`'s size and SHA-256; else one
    line, and nothing kept. A failed connection is told with `title` and `hint` (another way to
    get the data)."""
    handle, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with opener(url) as response:  # type: ignore[attr-defined]
                    digest, size = _copy_bounded(response, out, remote.size)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                hint = hint or (
                    f"put its files in {destination.parent} (or a folder given by data_dir)"
                )
                raise VaelabError(
                    f"{title} was not found locally and downloading {url} failed ({exc}). {hint}",
                    parameters=("data_dir",),
                ) from None
        if size > remote.size:
            raise VaelabError(
                f"{url}: the download is larger than the {remote.size} bytes expected; "
                "it was discarded"
            )
        if digest != remote.sha256:
            raise VaelabError(
                f"{url}: SHA-256 mismatch (expected {remote.sha256}, got {digest}); "
                "the download was discarded"
            )
        os.replace(temp_name, destination)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def _copy_bounded(source: IO[bytes], out: IO[bytes], size: int) -> tuple[str, int]:
    """Copy at most `size` + 1 bytes; (their SHA-256, how many were read)."""
    sha = hashlib.sha256()
    total = 0
    while total <= size:
        block = source.read(min(_CHUNK, size + 1 - total))
        if not block:
            break
        sha.update(block)
        out.write(block)
        total += len(block)
    return sha.hexdigest(), total
