"""What the CPU can do, and an opt-in to let MKL use AVX-512 on AMD CPUs.

torch's fp32 matrix products go to Intel MKL. MKL picks its AVX-512 kernels only on CPUs whose
vendor string is Intel: on an AMD CPU with full AVX-512 (Zen 4 and later) it takes a slower path,
about half the speed here. MKL decides through one exported function, `mkl_serv_intel_cpu_true`;
a two-line shared library that answers 1, preloaded, makes it dispatch on the CPU's real features.
vaelab builds that library with the system C compiler and re-starts itself with it preloaded, but
only when asked (`VAELAB_MKL_AVX512=1`) and only where every check below passes; anywhere else
(Intel, ARM, no AVX-512, no compiler, a torch without MKL) it says why in one line and goes on
unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

OPT_IN = "VAELAB_MKL_AVX512"
_SHIM_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
_SHIM_NAME = "libvaelab_mkl_avx512.so"
_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}


def cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The first processor's feature flags from /proc/cpuinfo."""
    return set(cpu_info().get("flags", "").split())


_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@functools.cache
def last_level_cache_bytes(caches: Path = _CACHES) -> int | None:
    """The size in bytes of the first CPU's largest cache, from Linux's sysfs directory
    `caches` (None where it does not say)."""
    sizes = []
    for entry in caches.glob("index[0-9]*"):
        try:
            with open(entry / "size", encoding="ascii", errors="replace") as file:
                text = file.read(32).strip()
        except OSError:
            continue
        unit = _SIZE_UNITS.get(text[-1:], 1)
        number = text[:-1] if text[-1:] in _SIZE_UNITS else text
        if number.isdigit():
            sizes.append(int(number) * unit)
    return max(sizes, default=None)


def has_native_bf16() -> bool:
    """True on x86 CPUs that multiply bf16 in hardware (AVX-512 BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[bool]:
    """Within the block the CPU takes subnormal floats (below 1.2e-38 in fp32) as zero.

    Training makes many: Adam's first moment of a weight whose gradient is exactly zero (the
    first layer's weights of a pixel that is 0 in every image of the batch, a unit whose ReLU
    never fires) decays by 0.9 per step into the subnormal range, where x86 arithmetic is many
    times slower. On the tutorial's model 34% of those moments were subnormal after three epochs
    and 44% after six, and unflushed epochs took 1.5-1.8x as long with the same losses
    (docs/speed.md). Jitted JAX/XLA code flushes by default.

    `torch.set_flush_denormal` sets the flags of the calling thread only; the matrix products
    and Adam's kernel run on the OpenMP threads of torch's intra-op pool too, so the flags are
    set on each of those as well (`_on_openmp_threads`). Yields whether the CPU flushes (x86
    with SSE3, ARM64); afterwards torch's default, no flushing, is back.
    """
    flushed = _set_flushing(True)
    try:
        yield flushed
    finally:
        if flushed:
            _set_flushing(False)


def _set_flushing(on: bool) -> bool:
    supported = torch.set_flush_denormal(on)
    if supported:
        _on_openmp_threads(lambda: torch.set_flush_denormal(on))
    return supported


_TEAM_FUNCTION = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _on_openmp_threads(action: Callable[[], object]) -> bool:
    """Run `action` once on every thread of the calling thread's OpenMP team (the threads torch's
    intra-op work runs on); False where no OpenMP runtime is loaded or it lacks the entry point."""
    runtime = _loaded_openmp_runtime()
    parallel = getattr(runtime, "GOMP_parallel", None)
    if parallel is None:
        return False
    parallel.argtypes = [_TEAM_FUNCTION, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None

    def on_each_thread(_data: object) -> None:
        action()

    parallel(_TEAM_FUNCTION(on_each_thread), None, 0, 0)  # 0: the team torch.set_num_threads set
    return True


@functools.cache
def _loaded_openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime this process loaded with torch (GNU, Intel or LLVM), or None."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            paths = [line.split()[-1] for line in maps if "/lib" in line]
    except OSError:
        return None
    for path in paths:
        if Path(path).name.startswith(("libgomp", "libiomp5", "libomp")):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def mkl_override_blocker() -> str | None:
    """Why the MKL override cannot apply here, or None when it can."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "it applies to Linux on x86-64 only"
    if cpu_info().get("vendor_id") != "AuthenticAMD":
        return "this CPU is not an AMD CPU (MKL already picks its best kernels)"
    if not cpu_flags() >= _AVX512:
        return "this CPU lacks AVX-512"
    if "BLAS_INFO=mkl" not in torch.__config__.show():
        return "this torch does not use MKL"
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "no C compiler (cc) was found to build the shim"
    return None


def mkl_override_active() -> bool:
    """Whether the MKL shim is loaded into this process (MKL then takes its AVX-512 kernels)."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return any(_SHIM_NAME in line for line in maps)
    except OSError:
        return False


def _shim_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "vaelab" / _SHIM_NAME


def build_shim() -> Path:
    """Compile the one-function library into the user cache (once); returns its path."""
    target = _shim_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.with_suffix(".c")
    source.write_text(_SHIM_SOURCE)
    compiler = shutil.which("cc") or shutil.which("gcc") or "cc"
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    partial.replace(target)
    return target


def maybe_reexec_with_mkl_override(
    argv: list[str], say: Callable[[str], None] = print, program: Sequence[str] = ("-m", "vaelab")
) -> None:
    """With VAELAB_MKL_AVX512=1, re-start `python PROGRAM ARGV` with the MKL shim preloaded.

    Returns (doing nothing) when not asked, when already preloaded, or when a check fails.
    """
    if os.environ.get(OPT_IN) != "1":
        return
    preloaded = os.environ.get("LD_PRELOAD", "")
    if _SHIM_NAME in preloaded:
        return
    blocker = mkl_override_blocker()
    if blocker is not None:
        say(f"vaelab: {OPT_IN}=1 ignored: {blocker}")
        return
    try:
        shim = build_shim()
    except (OSError, subprocess.CalledProcessError) as exc:
        say(f"vaelab: {OPT_IN}=1 ignored: could not build the MKL shim ({exc})")
        return
    env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, [str(shim), preloaded]))}
    os.execve(sys.executable, [sys.executable, *program, *argv], env)
