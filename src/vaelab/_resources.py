"""How much memory and disk this process may still use, and one-line refusals when a dataset needs
more than there is: checked before anything that size is allocated or written.

Memory is the smaller of the kernel's estimate of what can be allocated without swapping
(``MemAvailable`` in /proc/meminfo) and what the process's control group still allows
(cgroup v2 ``memory.max`` minus ``memory.current``), so a container's limit counts as the machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vaelab._io import size_words
from vaelab.errors import VaelabError

_MEMINFO = Path("/proc/meminfo")
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


def total_memory() -> int | None:
    """Bytes of memory this machine (or the process's control group, when smaller) has."""
    folder = _cgroup_dir()
    limit = None if folder is None else _cgroup_number(folder, "memory.max")
    known = [n for n in (_meminfo("MemTotal"), limit) if n is not None]
    return min(known) if known else None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None where the system does not say."""
    known = [n for n in (_meminfo("MemAvailable"), _cgroup_headroom()) if n is not None]
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


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
