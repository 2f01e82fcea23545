"""Page-cache hints on mapped pixels: the kernel is told how each is read."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from vaelab.data.images import Images
from vaelab.data.npyfile import read_npy
from vaelab.data.pagecache import _byte_span, read_at_random, will_read, will_read_rows

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise via libc")


def _mapped(tmp_path, shape=(64, 16, 16, 3)):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    return read_npy(path)


def _random_read_flag(array: np.ndarray) -> bool:
    """Whether /proc/self/smaps lists the mapping holding `array` with the rr (random read) flag."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/smaps") as handle:
        inside = False
        for line in handle:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                low, high = (int(part, 16) for part in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                return "rr" in line.split()[1:]
    raise AssertionError("the mapping was not found")


@linux
def test_a_mapped_file_read_at_random_carries_the_flag(tmp_path):
    array = _mapped(tmp_path)
    assert not _random_read_flag(array)
    assert read_at_random(array)
    assert _random_read_flag(array)


@linux
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_images_of_a_mapped_file_are_marked_read_at_random(tmp_path):
    array = _mapped(tmp_path)
    images = Images(torch.from_numpy(array).permute(0, 3, 1, 2), file=tmp_path / "images.npy")
    assert images.mapped and _random_read_flag(array)


@linux
def test_will_read_accepts_any_view_of_a_mapping(tmp_path):
    array = _mapped(tmp_path)
    assert will_read(array[3:17])  # starts inside a page
    assert will_read(torch.from_numpy(array).permute(0, 3, 1, 2)[5:9])


def test_byte_span_of_strided_views():
    base = torch.zeros(10, 4, 4, 3, dtype=torch.uint16)
    start = base.data_ptr()
    assert _byte_span(base) == (start, start + base.numel() * 2)
    view = base.permute(0, 3, 1, 2)[2:5]
    assert _byte_span(view) == (start + 2 * 48 * 2, start + 5 * 48 * 2)
    assert _byte_span(base[:0]) is None
    array = np.zeros((6, 5), np.uint8)[::2, 1:3]
    low = array.__array_interface__["data"][0]
    assert _byte_span(array) == (low, low + 4 * 5 + 2)


def test_hints_on_memory_that_is_not_mapped_change_nothing():
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    read_at_random(pixels)
    will_read(pixels)
    assert torch.equal(pixels, torch.arange(96, dtype=torch.uint8).reshape(2, 3, 4, 4))


@linux
def test_will_read_rows_of_a_mapping_reads_nothing_wrong(tmp_path):
    array = _mapped(tmp_path)
    expected = np.array(array[[5, 60, 2]])
    will_read_rows(array, [5, 60, 2])
    will_read_rows(torch.from_numpy(np.asarray(array)).permute(0, 3, 1, 2), [63, 0])
    will_read_rows(array[:0], [])
    assert np.array_equal(array[[5, 60, 2]], expected)
