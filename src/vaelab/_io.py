"""Reading and writing files: writes a crash cannot tear, and OS errors told in one line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vaelab.errors import VaelabError


def read_error(path: Path | str, error: OSError, expected: str = "a file") -> VaelabError:
    """The one-line refusal for an OSError met while reading `path`."""
    if isinstance(error, FileNotFoundError):
        return VaelabError(f"{path}: file not found")
    if isinstance(error, IsADirectoryError):
        return VaelabError(f"{path}: is a directory, expected {expected}")
    if isinstance(error, PermissionError):
        return VaelabError(f"{path}: permission denied")
    return VaelabError(f"{path}: cannot read ({error.strerror or error})")


def read_bytes(path: Path | str, expected: str = "a file") -> bytes:
    """The bytes of `path`; any OSError becomes a VaelabError naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise read_error(path, exc, expected) from None


def read_text(path: Path | str, expected: str = "a text file") -> str:
    """The UTF-8 text of `path`; undecodable bytes and OS errors become a VaelabError."""
    raw = read_bytes(path, expected)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VaelabError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `path` so that a crash leaves either the old file or the new one, whole.

    The bytes go to a temporary file in the same directory, are fsynced, then renamed over `path`;
    a failed write (disk full, permissions) leaves the earlier `path` untouched.
    """
    temp_name = None
    try:
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise VaelabError(f"{path}: could not write ({exc.strerror or exc}); {kept}") from None
    finally:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of `text` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(directory: Path, names: tuple[str, ...]) -> None:
    """Remove temporary files of writes that a crash cut short; the files they target are whole."""
    for name in names:
        for temp in directory.glob(f".{name}.*.tmp"):
            temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, so a power cut cannot bring back the old file."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)
