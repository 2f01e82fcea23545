"""What vaelab reads of the machine's memory: /proc/meminfo and the cgroup's limit, the smaller."""

from __future__ import annotations

import pytest

from vaelab import _resources

MEMINFO = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n"


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake /proc/meminfo and cgroup folder; returns a function that writes the cgroup's files."""
    (tmp_path / "meminfo").write_text(MEMINFO)
    group = tmp_path / "group"
    group.mkdir()
    monkeypatch.setattr(_resources, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(_resources, "_cgroup_dir", lambda: group)

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


def test_unreadable_or_malformed_files_say_nothing(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:\nMemAvailable: lots kB\n")
    monkeypatch.setattr(_resources, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(_resources, "_cgroup_dir", lambda: None)
    assert _resources.total_memory() is None
    assert _resources.available_memory() is None
