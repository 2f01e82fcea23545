"""Reading and writing files: writes a crash cannot tear, reads that are bounded, and OS errors
told in one line.

Every read goes through `read_bytes` (or `open_regular` for readers that stream): only regular
files are read, so a named pipe, a device such as /dev/zero, a directory or a symlink loop is
refused in one line before anything could block, and no read takes more than a limit of bytes:

- JSON and metrics files (config.json, eval.json, metrics.csv): 16 MiB (`TEXT_LIMIT`),
- CSV data files: 2 GiB (`CSV_LIMIT`),
- everything else, safetensors weights and checkpoints and the decompressed payload of an IDX
  file: 4 GiB (`FILE_LIMIT`).

The environment variable ``VAELAB_MAX_READ_BYTES`` (a number of bytes) replaces all of these
limits, to read a larger file or to hold vaelab to less.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from vaelab.errors import VaelabError

MAX_READ_ENV = "VAELAB_MAX_READ_BYTES"
MiB = 1 << 20
GiB = 1 << 30
TEXT_LIMIT = 16 * MiB
CSV_LIMIT = 2 * GiB
FILE_LIMIT = 4 * GiB
_TEXT_SUFFIXES = (".json", ".csv", ".txt")
_CHUNK = 16 * MiB


def read_limit(default: int) -> int:
    """The most bytes one read may take: ``$VAELAB_MAX_READ_BYTES`` when set, else `default`."""
    value = os.environ.get(MAX_READ_ENV, "").strip()
    if not value:
        return default
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise VaelabError(f"${MAX_READ_ENV}: expected a positive number of bytes, got '{value}'")
    return limit


def default_limit(path: Path | str) -> int:
    """The limit on reading `path` when its reader names none: small for JSON and metrics."""
    return TEXT_LIMIT if Path(path).suffix.lower() in _TEXT_SUFFIXES else FILE_LIMIT


def size_words(n: int) -> str:
    """`n` bytes for a reader: '12 bytes', '3.0 MiB', '4.0 GiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def over_limit(limit: int) -> str:
    """The end of a refusal for a read of more than `limit` bytes: the limit and how to raise it."""
    return (
        f"more than the {size_words(limit)} ({limit} bytes) vaelab reads; "
        f"set {MAX_READ_ENV} to a larger number of bytes to read it"
    )


def too_large(path: Path | str, what: str, limit: int) -> VaelabError:
    """The refusal of a read of more than `limit` bytes; `what` says how much ('5.0 GiB')."""
    return VaelabError(f"{path}: {what} is {over_limit(limit)}")


def read_error(path: Path | str, error: OSError, expected: str = "a file") -> VaelabError:
    """The one-line refusal for an OSError met while reading `path`."""
    if isinstance(error, FileNotFoundError):
        return VaelabError(f"{path}: file not found")
    if isinstance(error, IsADirectoryError):
        return VaelabError(f"{path}: is a directory, expected {expected}")
    if isinstance(error, PermissionError):
        return VaelabError(f"{path}: permission denied")
    if error.errno == errno.ELOOP:
        return VaelabError(f"{path}: too many levels of symbolic links (a symlink loop?)")
    return VaelabError(f"{path}: cannot read ({error.strerror or error})")


def _not_regular(path: Path | str, mode: int, expected: str) -> VaelabError | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return VaelabError(f"{path}: is a directory, expected {expected}")
    if stat.S_ISFIFO(mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a regular file"
    return VaelabError(f"{path}: is {kind}, not a regular file; expected {expected}")


def open_regular(path: Path | str, expected: str = "a file") -> BinaryIO:
    """`path` opened for binary reading, refused in one line unless it is a regular file.

    The type is checked before opening (opening a named pipe for reading would wait for a
    writer), the open does not block, and the open descriptor is checked again in case the path
    was swapped in between.
    """
    try:
        error = _not_regular(path, os.stat(path).st_mode, expected)
        if error is not None:
            raise error
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise read_error(path, exc, expected) from None
    try:
        error = _not_regular(path, os.fstat(fd).st_mode, expected)
        if error is not None:
            raise error
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_at_most(handle: BinaryIO, most: int) -> bytes:
    """Up to `most` bytes of `handle`, never asking for more memory than the file holds.

    The size the file reports is only a hint (files under /proc report 0), so the read goes on in
    chunks until the end of the file or `most` bytes.
    """
    try:
        hint = os.fstat(handle.fileno()).st_size - handle.tell()
    except (OSError, AttributeError, ValueError):
        hint = 0
    first = min(most, hint + 1) if hint > 0 else min(most, _CHUNK)
    chunks: list[bytes] = []
    total = 0
    ask = first
    while total < most:
        chunk = handle.read(min(ask, most - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        ask = _CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_bytes(path: Path | str, expected: str = "a file", limit: int | None = None) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; else one-line VaelabError.

    `limit` defaults to `default_limit(path)`; ``$VAELAB_MAX_READ_BYTES`` replaces it when set.
    """
    most = read_limit(default_limit(path) if limit is None else limit)
    with open_regular(path, expected) as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            if size > most:
                raise too_large(path, f"{size_words(size)} ({size} bytes)", most)
            _require_read_memory(path, size, expected)
            raw = read_at_most(handle, most + 1)
        except OSError as exc:
            raise read_error(path, exc, expected) from None
        except MemoryError:
            raise VaelabError(f"{path}: not enough memory to read {expected}") from None
    if len(raw) > most:
        raise too_large(path, "the file", most)
    return raw


def _require_read_memory(path: Path | str, size: int, expected: str) -> None:
    """Refuse a read whose bytes (read in blocks, then joined: twice the file) would not fit in
    the free memory, before any is read."""
    from vaelab._resources import require_memory  # it imports this module

    require_memory(2 * size, f"{path}: reading {expected} of {size_words(size)}")


def sha256_file(path: Path | str, what: str = "a file") -> str:
    """The SHA-256 (hex) of the regular file `path`, read in blocks."""
    digest = hashlib.sha256()
    with open_regular(path, what) as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path: Path | str, expected: str = "a text file", limit: int | None = None) -> str:
    """The UTF-8 text of `path`; undecodable bytes and OS errors become a VaelabError."""
    raw = read_bytes(path, expected, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VaelabError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None


def parse_json(text: str | bytes, where: Path | str) -> Any:
    """Parsed JSON; malformed text, nesting too deep, a number too long or a key given twice in
    one object (JSON would keep the last silently) is one VaelabError."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise VaelabError(f"{where}: not valid JSON ({exc}); give each key once") from None
    except RecursionError:
        raise VaelabError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers of 4300+ digits
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise VaelabError(f"{where}: not valid JSON ({reason})") from None


class _DuplicateKey(Exception):
    """A key an object of a JSON text holds twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a key it holds twice."""
    found = dict(pairs)
    if len(found) < len(pairs):
        twice = next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise _DuplicateKey(f"the key {twice[:60]!r} is given twice in one object")
    return found


def _new_file_mode(path: Path) -> int:
    """The mode a rewritten file keeps, or the one the umask gives a new file."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `path` so that a crash leaves either the old file or the new one, whole.

    The bytes go to a temporary file in the same directory, are fsynced, then renamed over `path`;
    a failed write (disk full, permissions) leaves the earlier `path` untouched. The file gets
    the mode it had, or the one the umask gives a new file (not mkstemp's 0600).
    """
    temp_name = None
    try:
        mode = _new_file_mode(path)
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        os.fchmod(handle, mode)
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
