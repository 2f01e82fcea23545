"""What vaelab reads of the machine's memory: /proc/meminfo and the cgroup's limit, the smaller."""

from __future__ import annotations

import pytest

from vaelab import _resources

_REAL_HEADROOM = _resources._address_space_headroom

MEMINFO = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake /proc/meminfo and cgroup folder; returns a function that writes the cgroup's files."""
    (tmp_path / "meminfo").write_text(MEMINFO)
    group = tmp_path / "group"
    group.mkdir()
    monkeypatch.setattr(_resources, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(_resources, "_cgroup_dir", lambda: group)
    monkeypatch.setattr(_resources, "_address_space_headroom", lambda: None)  # ulimit -v aside

    def cgroup(most: str, current: str = "0") -> None:
        (group / "memory.max").write_text(most + "\n")
        (group / "memory.current").write_text(current + "\n")

    return cgroup


def test_without_a_limit_the_machine_counts(machine):
    machine("max")
    assert _resources.total_memory() == 16_000_000 * 1024
    assert _resources.available_memory() == 8_000_000 * 1024


def test_a_smaller_cgroup_limit_counts_as_the_machine(machine):
    machine(str(4 << 30), str(1 << 30))
    assert _resources.total_memory() == 4 << 30
    assert _resources.available_memory() == 3 << 30


def test_a_larger_cgroup_limit_changes_nothing(machine):
    machine(str(1 << 50), str(1 << 30))
    assert _resources.total_memory() == 16_000_000 * 1024
    assert _resources.available_memory() == 8_000_000 * 1024


def test_an_address_space_limit_counts_beside_what_is_mapped(machine, tmp_path, monkeypatch):
    machine("max")
    (tmp_path / "status").write_text("Name:\tpython\nVmSize:\t 1000000 kB\nVmRSS:\t 5 kB\n")
    monkeypatch.setattr(_resources, "_STATUS", tmp_path / "status")
    monkeypatch.setattr(_resources.resource, "getrlimit", lambda kind: (3 << 30, 3 << 30))
    monkeypatch.setattr(_resources, "_address_space_headroom", _REAL_HEADROOM)
    assert _resources.available_memory() == (3 << 30) - 1_000_000 * 1024


def test_no_address_space_limit_says_nothing(monkeypatch):
    limit = _resources.resource.RLIM_INFINITY
    monkeypatch.setattr(_resources.resource, "getrlimit", lambda kind: (limit, limit))
    assert _REAL_HEADROOM() is None


def test_unreadable_or_malformed_files_say_nothing(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:\nMemAvailable: lots kB\n")
    monkeypatch.setattr(_resources, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(_resources, "_cgroup_dir", lambda: None)
    monkeypatch.setattr(_resources, "_address_space_headroom", lambda: None)
    assert _resources.total_memory() is None
    assert _resources.available_memory() is None


CPU_FAILURE = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)"
)
CUDA_FAILURE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB"
)
NUMPY_FAILURE = (
    "Unable to allocate 1.50 MiB for an array with shape (393216,) and data type float32"
)


class TestAllocationFailures:
    @pytest.mark.parametrize(
        "error",
        [MemoryError(), RuntimeError(CPU_FAILURE), RuntimeError(CUDA_FAILURE),
         MemoryError(NUMPY_FAILURE)],
        ids=["MemoryError", "torch CPU", "CUDA", "NumPy"],
    )  # fmt: skip
    def test_allocation_failures_are_recognised(self, error):
        assert _resources.is_allocation_failure(error)

    @pytest.mark.parametrize("error", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                       ValueError("out of memory")])  # fmt: skip
    def test_other_errors_are_not(self, error):
        assert not _resources.is_allocation_failure(error)

    @pytest.mark.parametrize(
        "message, size",
        [(CPU_FAILURE, 80_000_000_000), (CUDA_FAILURE, 2 << 30), (NUMPY_FAILURE, 3 << 19),
         ("", None)],
    )  # fmt: skip
    def test_the_bytes_tried_are_read_from_the_message(self, message, size):
        assert _resources.bytes_tried(RuntimeError(message)) == size

    def test_the_refusal_names_what_was_done_the_bytes_and_the_free_memory(self, machine):
        machine("max")
        message = str(_resources.out_of_memory(RuntimeError(CPU_FAILURE), "vaelab train"))
        assert message == (
            "vaelab train ran out of memory: allocating 74.5 GiB (80,000,000,000 bytes) failed "
            "with 7.6 GiB (8,192,000,000 bytes) free; free some memory or ask for less"
        )

    def test_a_gpu_failure_is_said_to_be_on_the_gpu(self, machine):
        machine("max")
        message = str(_resources.out_of_memory(RuntimeError(CUDA_FAILURE), "vaelab train"))
        assert "allocating 2.0 GiB (2,147,483,648 bytes) failed on the GPU;" in message

    def test_an_unsized_failure_still_says_what_was_done(self, machine):
        machine("max")
        message = str(_resources.out_of_memory(MemoryError(), "vaelab evaluate"))
        assert message.startswith("vaelab evaluate ran out of memory: an allocation failed with ")
