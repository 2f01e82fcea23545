"""Finding a dataset's files on disk, or downloading them once with every SHA-256 checked.

A dataset is looked up in a folder the user names, then ``$VAELAB_DATA``, the user cache
(``$XDG_CACHE_HOME/vaelab/<name>``, ``~/.cache`` by default) and a Debian-style system folder
(``/usr/share/datasets/<name>``); when none holds its files they are downloaded into the cache.
A download is written to a temporary file beside its destination, read no further than the size
the table gives, and kept only when its SHA-256 matches. A download has a deadline for all of its
files together, ``$VAELAB_DOWNLOAD_TIMEOUT`` seconds (30 minutes by default), besides a minute
per read; on a terminal a progress bar shows each file.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from vaelab._io import sha256_file
from vaelab.errors import VaelabError

Opener = Callable[[str], object]
_CHUNK = 1 << 20
DEADLINE_ENV = "VAELAB_DOWNLOAD_TIMEOUT"
# 30 minutes: CIFAR-10's 170 MB at 100 kB/s; a server that trickles bytes is given up on.
DEFAULT_DEADLINE_S = 1800.0
MAX_DEADLINE_S = 7 * 24 * 3600.0
READ_TIMEOUT_S = 60.0  # the longest wait for any one read


class Deadline:
    """The time a download may still take: `seconds` in all from when it was made."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the download started."""
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(self.seconds - self.elapsed(), 0.0)


def download_deadline() -> float:
    """Seconds a dataset's download may take in all: $VAELAB_DOWNLOAD_TIMEOUT, else 30 minutes."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return DEFAULT_DEADLINE_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_DEADLINE_S:
        raise VaelabError(
            f"{DEADLINE_ENV} must be a number of seconds above 0 and at most "
            f"{MAX_DEADLINE_S:.0f}, got {text[:40]!r}"
        )
    return seconds


@dataclass(frozen=True)
class Remote:
    """One file of a dataset as published: its SHA-256 and its size in bytes."""

    sha256: str
    size: int


def default_cache_dir(name: str = "fashion-mnist") -> Path:
    """Where downloads of dataset `name` go: $XDG_CACHE_HOME/vaelab/<name> (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab" / name


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
    word the refusal when the network cannot be reached. All of them must arrive before the
    deadline (`download_deadline`)."""
    deadline = Deadline(download_deadline())
    opener = opener or _opener_within(deadline)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{target}: cannot create the download folder ({exc.strerror})") from None
    for name, remote in files.items():
        destination = target / name
        if destination.is_file() and sha256_file(destination) == remote.sha256:
            continue
        download_verified(opener, base_url + name, destination, remote, title, hint, deadline)
    return target


def _opener_within(deadline: Deadline) -> Opener:
    """urllib's opener, no read of which waits past `deadline`."""

    def open_url(url: str) -> object:
        timeout = max(min(READ_TIMEOUT_S, deadline.remaining()), 0.001)
        return urllib.request.urlopen(url, timeout=timeout)

    return open_url


class Transfer:
    """One file's bytes as they arrive: how many, their SHA-256, and the bar that shows them."""

    def __init__(self, url: str, remote: Remote, deadline: Deadline) -> None:
        self.url, self.remote, self.deadline = url, remote, deadline
        self.received = 0
        self.sha = hashlib.sha256()
        self.bar = _progress_bar(url.rsplit("/", 1)[-1], remote.size)

    def add(self, block: bytes) -> None:
        """Count `block` in."""
        self.sha.update(block)
        self.received += len(block)
        self.bar.update(len(block))

    def so_far(self) -> str:
        """What has arrived, and in how long: '1,024 of 4,096 bytes in 12.3 s'."""
        return f"{self.received:,} of {self.remote.size:,} bytes in {self.deadline.elapsed():.1f} s"


def download_verified(
    opener: Opener,
    url: str,
    destination: Path,
    remote: Remote,
    title: str = "the dataset",
    hint: str = "",
    deadline: Deadline | None = None,
) -> None:
    """Fetch `url` into `destination` when its bytes have `remote`'s size and SHA-256, before
    `deadline` (default `download_deadline`'s from now); else one line, and nothing kept. A failed
    connection is told with `title` and `hint` (another way to get the data)."""
    deadline = deadline or Deadline(download_deadline())
    handle, temp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    transfer = Transfer(url, remote, deadline)
    hint = hint or f"put its files in {destination.parent} (or a folder given by data_dir)"
    try:
        with os.fdopen(handle, "wb") as out, transfer.bar:
            try:
                with opener(url) as response:  # type: ignore[attr-defined]
                    _copy_bounded(response, out, transfer, hint)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise VaelabError(
                    f"{title} was not found locally and downloading {url} failed after "
                    f"{transfer.so_far()} ({exc}). {hint}",
                    parameters=("data_dir",),
                ) from None
        size, digest = transfer.received, transfer.sha.hexdigest()
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


def _copy_bounded(source: IO[bytes], out: IO[bytes], transfer: Transfer, hint: str) -> None:
    """Copy at most the expected size + 1 bytes into `out`, refusing once the deadline passes."""
    # read1 returns what has arrived; read(n) would wait for all n bytes of a slow server
    read = getattr(source, "read1", source.read)
    size = transfer.remote.size
    while transfer.received <= size:
        if transfer.deadline.remaining() <= 0:
            raise VaelabError(
                f"{transfer.url}: download stopped at the {transfer.deadline.seconds:g} s deadline "
                f"after {transfer.so_far()}; set {DEADLINE_ENV} to more seconds, or {hint}",
                parameters=("data_dir",),
            )
        block = read(min(_CHUNK, size + 1 - transfer.received))
        if not block:
            break
        out.write(block)
        transfer.add(block)


def _progress_bar(name: str, size: int) -> Any:
    """A bar of a file's bytes on a terminal; one that shows nothing elsewhere."""
    return tqdm(
        total=size, desc=f"downloading {name}", unit="B", unit_scale=True, unit_divisor=1024,
        disable=not sys.stderr.isatty(), leave=False,
    )  # fmt: skip
