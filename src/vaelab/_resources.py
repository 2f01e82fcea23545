"""How much memory and disk this process may still use, and one-line refusals when a dataset needs
more than there is: checked before anything that size is allocated or written.

Memory is the smallest of the kernel's estimate of what can be allocated without swapping
(``MemAvailable`` in /proc/meminfo), what the process's control group still allows (cgroup v2
``memory.max`` minus ``memory.current``), so a container's limit counts as the machine, and what
its address-space limit (``ulimit -v``, RLIMIT_AS) leaves beside what it maps already.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
from pathlib import Path

from vaelab._io import size_words
from vaelab.errors import VaelabError

_MEMINFO = Path("/proc/meminfo")
_STATUS = Path("/proc/self/status")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_READ_MOST = 1 << 16  # these files are a few hundred bytes


def _read_small(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(_READ_MOST).decode("ascii", "replace")
    except OSError:
        return None


def _meminfo(field: str) -> int | None:
    """Bytes of one /proc/meminfo field (`MemAvailable`, `MemTotal`), or None."""
    for line in (_read_small(_MEMINFO) or "").splitlines():
        if line.startswith(f"{field}:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def _cgroup_dir() -> Path | None:
    """This process's cgroup v2 folder, when there is one."""
    text = _read_small(Path("/proc/self/cgroup"))
    for line in (text or "").splitlines():
        if line.startswith("0::"):
            folder = _CGROUP_ROOT / line[3:].strip().lstrip("/")
            return folder if folder.is_dir() else None
    return None


def _cgroup_number(folder: Path, name: str) -> int | None:
    """A number of this cgroup's memory controller (None: 'max', or no controller)."""
    text = (_read_small(folder / name) or "").strip()
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    folder = _cgroup_dir()
    if folder is None:
        return None
    most, used = _cgroup_number(folder, "memory.max"), _cgroup_number(folder, "memory.current")
    if most is None or used is None:
        return None
    return max(most - used, 0)


def _address_space_headroom() -> int | None:
    """What RLIMIT_AS still lets this process map (its limit minus ``VmSize``), or None when it
    has no such limit."""
    try:
        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if limit == resource.RLIM_INFINITY or limit < 0:
        return None
    for line in (_read_small(_STATUS) or "").splitlines():
        parts = line.split()
        if line.startswith("VmSize:") and len(parts) >= 2 and parts[1].isdigit():
            return max(limit - int(parts[1]) * 1024, 0)
    return None


def total_memory() -> int | None:
    """Bytes of memory this machine (or the process's control group, when smaller) has."""
    folder = _cgroup_dir()
    limit = None if folder is None else _cgroup_number(folder, "memory.max")
    known = [n for n in (_meminfo("MemTotal"), limit) if n is not None]
    return min(known) if known else None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None where the system does not say."""
    found = (_meminfo("MemAvailable"), _cgroup_headroom(), _address_space_headroom())
    known = [n for n in found if n is not None]
    return min(known) if known else None


def free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def not_enough(what: str, needed: int, available: int, where: str) -> VaelabError:
    """The one-line refusal of `what`, which needs `needed` bytes of `where` where there are
    `available`."""
    return VaelabError(
        f"{what} needs {size_words(needed)} ({needed:,} bytes) of {where}, "
        f"{size_words(available)} ({available:,} bytes) are available"
    )


def require_memory(needed: int, what: str) -> None:
    """Refuse `what` in one line when it needs more memory than this process can allocate."""
    available = available_memory()
    if available is not None and needed > available:
        raise not_enough(what, needed, available, "memory")


def require_disk(folder: Path, needed: int, what: str) -> None:
    """Refuse `what` in one line when `folder`'s filesystem has less than `needed` bytes free."""
    available = free_disk(folder)
    if available is not None and needed > available:
        raise not_enough(what, needed, available, f"disk in {folder}")


# How torch's CPU allocator ("you tried to allocate 8000000000 bytes"), its CUDA allocator ("Tried
# to allocate 2.00 GiB") and NumPy ("Unable to allocate 7.45 GiB") tell the size that failed.
_TRIED = re.compile(r"allocate ([0-9.]+) ?(bytes|B|KiB|MiB|GiB|TiB)\b", re.IGNORECASE)
_UNITS = {"bytes": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "unable to allocate")


def is_allocation_failure(error: BaseException) -> bool:
    """Whether `error` is a failed allocation: MemoryError, or torch's out-of-memory errors
    (RuntimeError "DefaultCPUAllocator: can't allocate memory", CUDA's OutOfMemoryError)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in text for words in _ALLOCATION_FAILURES)


def bytes_tried(error: BaseException) -> int | None:
    """The size of the allocation `error` reports as failed, in bytes, when it says."""
    found = _TRIED.search(str(error))
    if found is None:
        return None
    return int(float(found.group(1)) * _UNITS[found.group(2).lower()])


def out_of_memory(error: BaseException, doing: str) -> VaelabError:
    """The one-line refusal of an allocation that failed (`is_allocation_failure`) while `doing`:
    the bytes asked for and, where the system says, the memory available."""
    tried = bytes_tried(error)
    asked = (
        "an allocation" if tried is None else f"allocating {size_words(tried)} ({tried:,} bytes)"
    )
    on_gpu = "cuda" in str(error).lower()
    available = None if on_gpu else available_memory()
    free = " on the GPU" if on_gpu else ""
    if available is not None:
        free = f" with {size_words(available)} ({available:,} bytes) free"
    return VaelabError(
        f"{doing} ran out of memory: {asked} failed{free}; free some memory or ask for less"
    )


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
