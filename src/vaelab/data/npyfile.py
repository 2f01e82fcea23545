"""NumPy's file formats read without unpickling anything and, where the bytes allow it, without
reading them: a .npy file, and each uncompressed member of a .npz file, is memory-mapped at the
offset of its array, so its pages are read on demand and can be dropped by the kernel (they are
not the process's own memory). A compressed .npz member is decompressed into memory, bounded by
the read limit.

Each header is checked before anything is mapped or allocated: no Python objects, a format
version NumPy reads, and exactly as many bytes after the header as the shape and type it declares
(a truncated file, or one with bytes past its array, is refused).
"""

from __future__ import annotations

import copy
import io
import lzma
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from vaelab._io import FILE_LIMIT, open_regular, read_error, read_limit, size_words, too_large
from vaelab._resources import require_memory
from vaelab.errors import VaelabError

UNPICKLE = "holds Python objects (a pickle); vaelab does not unpickle"
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a zip member's local header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"


def read_npy(path: str | Path, limit: int | None = None) -> np.ndarray:
    """The array of a .npy file, memory-mapped (read-only); one holding Python objects is
    refused, never unpickled. `limit` does not apply: nothing is read into memory."""
    del limit  # a mapped file takes no memory of its own
    where = str(path)
    with open_regular(path, "a .npy file") as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            shape, fortran, dtype, offset = _header(handle, where)
        except OSError as exc:
            raise read_error(path, exc, "a .npy file") from None
        _check_size(where, shape, dtype, size - offset)
        return _mapped(handle, Path(path), dtype, shape, fortran, offset)


def read_npz(path: str | Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of a .npz file by name (without '.npy'), none of them unpickled: uncompressed
    members memory-mapped, compressed ones decompressed.

    The decompressed sizes the zip directory declares must fit in the read limit before anything
    is decompressed, and no member is decompressed further than its declared size.
    """
    most = read_limit(FILE_LIMIT if limit is None else limit)
    with open_regular(path, "a .npz file") as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                _require_unique_names(members, Path(path))
                packed = [m for m in members if m.compress_type != zipfile.ZIP_STORED]
                declared = sum(member.file_size for member in packed)
                if declared > most:
                    raise too_large(
                        path, f"the compressed arrays' {size_words(declared)} (decompressed)", most
                    )
                require_memory(declared, f"{path}: decompressing its arrays")
                return {_key(m.filename): _member(archive, handle, m, Path(path)) for m in members}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise VaelabError(f"{path}: not a valid .npz file ({reason(exc)})") from None
        except (OSError, ValueError, RuntimeError, zlib.error, lzma.LZMAError, struct.error) as exc:
            # a bad CRC, a corrupt deflate stream, an encrypted member
            raise VaelabError(f"{path}: corrupt .npz file ({reason(exc)})") from None


def _require_unique_names(members: list[zipfile.ZipInfo], path: Path) -> None:
    """Refuse two members of one name (or of names that are one array's, 'a' and 'a.npy'): a
    zip may hold them, and one would be passed over without a word."""
    seen: set[str] = set()
    for member in members:
        key = _key(member.filename)
        if key in seen:
            raise VaelabError(
                f"{path}: holds the array {key!r} twice (member {member.filename!r} again); not "
                "a file NumPy wrote"
            )
        seen.add(key)


def npz_compressed(path: str | Path) -> bool:
    """Whether the .npz file `path` holds a compressed member; False when it is no valid zip
    (reading it then says what is wrong)."""
    try:
        with open_regular(path, "a .npz file") as handle, zipfile.ZipFile(handle) as archive:
            return any(m.compress_type != zipfile.ZIP_STORED for m in archive.infolist())
    except (VaelabError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        return False
    except (EOFError, NotImplementedError, RuntimeError, struct.error):
        return False


def _key(name: str) -> str:
    return name[: -len(".npy")] if name.endswith(".npy") else name


def _member(
    archive: zipfile.ZipFile, handle: IO[bytes], member: zipfile.ZipInfo, path: Path
) -> np.ndarray:
    where = f"{path} ({_key(member.filename)})"
    if member.compress_type == zipfile.ZIP_STORED and not member.flag_bits & 0x1:
        if member.compress_size != member.file_size:
            raise _past_declared(where, member.file_size)
        start = _data_offset(handle, member, path)
        handle.seek(start)
        shape, fortran, dtype, header = _header(handle, where)
        _check_size(where, shape, dtype, member.file_size - header)
        return _mapped(handle, path, dtype, shape, fortran, start + header)
    raw = _inflated(archive, member, where)
    if len(raw) != member.file_size:
        raise VaelabError(f"{path}: corrupt .npz file ({member.filename} is not the size declared)")
    return parse_npy(raw, where)


def _inflated(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> bytes:
    """A compressed member's bytes, refused when its stream holds more than the size the zip
    directory declares: zipfile stops reading there without a word."""
    one_more = copy.copy(member)
    one_more.file_size = member.file_size + 1
    try:
        with archive.open(one_more) as stream:
            raw = stream.read(one_more.file_size)
    except zipfile.BadZipFile:  # the CRC of one byte more, or of the declared bytes themselves
        with archive.open(member) as stream:
            stream.read(member.file_size)  # raises when the declared bytes are corrupt
        raise _past_declared(where, member.file_size) from None
    if len(raw) > member.file_size:
        raise _past_declared(where, member.file_size)
    return raw


def _past_declared(where: str, size: int) -> VaelabError:
    return VaelabError(
        f"{where}: data past the {size} bytes the zip directory declares for it; not a file "
        "NumPy wrote"
    )


def _data_offset(handle: IO[bytes], member: zipfile.ZipInfo, path: Path) -> int:
    """Where a stored member's bytes begin: after its local header, name and extra field."""
    handle.seek(member.header_offset)
    local = handle.read(_LOCAL_HEADER.size)
    if len(local) != _LOCAL_HEADER.size or local[:4] != _LOCAL_MAGIC:
        raise VaelabError(f"{path}: corrupt .npz file ({member.filename} has no local header)")
    fields = _LOCAL_HEADER.unpack(local)
    name_length, extra_length = fields[-2], fields[-1]
    return member.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def parse_npy(raw: bytes, where: str) -> np.ndarray:
    """The array of the .npy bytes `raw` (a copy in memory): header checked (no objects, exactly
    the bytes its shape needs) before `np.load(..., allow_pickle=False)` allocates anything."""
    stream = io.BytesIO(raw)
    shape, _, dtype, offset = _header(stream, where)
    _check_size(where, shape, dtype, len(raw) - offset)
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise VaelabError(f"{where}: not a valid .npy array ({reason(exc)})") from None


def _header(stream: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, offset of the data) of the .npy header at the stream's
    position; the offset is counted from the start of the stream."""
    start = stream.tell()
    try:
        version = np.lib.format.read_magic(stream)
        shape, fortran, dtype = _read_header(stream, version)
    except Exception as exc:  # NumPy parses the header text; damaged text raises many things
        stream.seek(start)
        if stream.read(1) == b"\x80":  # the first byte of a pickle of protocol 2 or later
            raise VaelabError(f"{where}: {UNPICKLE}") from None
        raise VaelabError(f"{where}: not a valid .npy array ({reason(exc)})") from None
    if dtype.hasobject:
        raise VaelabError(f"{where}: {UNPICKLE}")
    return tuple(int(n) for n in shape), bool(fortran), dtype, stream.tell() - start


def _read_header(stream: IO[bytes], version: tuple[int, int]) -> tuple[Any, bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"format version {version[0]}.{version[1]} is not one NumPy reads")


def _check_size(where: str, shape: tuple[int, ...], dtype: np.dtype, follow: int) -> None:
    needed = math.prod(shape) * dtype.itemsize
    if needed > follow:
        raise VaelabError(
            f"{where}: truncated: its header declares {list(shape)} of {dtype} ({needed} bytes), "
            f"{max(follow, 0)} bytes follow"
        )
    if needed < follow:
        raise VaelabError(
            f"{where}: {follow - needed} bytes past the array its header declares ({list(shape)} "
            f"of {dtype}, {needed} bytes); not a file NumPy wrote"
        )


def _mapped(
    handle: IO[bytes], path: Path, dtype: np.dtype, shape: tuple[int, ...], fortran: bool,
    offset: int,
) -> np.ndarray:  # fmt: skip
    """The array at `offset` of the open file `handle`, mapped read-only (the mapping outlives
    the handle; mapping the open file, not its path, maps what was checked)."""
    if math.prod(shape) == 0:
        return np.empty(shape, dtype)  # an empty region cannot be mapped
    try:
        return np.memmap(
            handle, dtype=dtype, mode="r", offset=offset, shape=shape,
            order="F" if fortran else "C",
        )  # fmt: skip
    except OSError as exc:
        raise read_error(path, exc, "a NumPy file") from None
    except ValueError as exc:  # the file shrank since its size was read
        raise VaelabError(f"{path}: cannot map the array ({reason(exc)})") from None


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for a one-line refusal."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return text or type(exc).__name__
