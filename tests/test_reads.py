"""Every read is bounded and only regular files are read: pipes, devices, directories, symlink
loops, files over the limit, IDX headers that claim too much and gzip bombs each end in one line."""

from __future__ import annotations

import contextlib
import gzip
import os
import resource
import signal
import stat
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_cases import csv_pair, idx_dir
from tests.cases_reads import BOMB_INFLATES_TO, HEADER_4, gzip_bomb
from tests.helpers import finish, run_python, start_vaelab, write_idx
from vaelab import _io
from vaelab._io import CSV_LIMIT, FILE_LIMIT, TEXT_LIMIT, default_limit, read_bytes, read_text
from vaelab.data import csvfile, read_csv, read_idx, read_idx_split
from vaelab.errors import VaelabError

CHILD_MEMORY = 3 << 29  # 1.5 GiB of address space; `import torch` alone takes about 0.65 GiB
HEADROOM = 3 << 28  # at least this much above what importing vaelab's command line maps


def refusal_and_peak_memory(read, *args):
    """The VaelabError `read(*args)` raises, and the most Python memory it held meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(VaelabError) as info:
            read(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging forever should a read block (opening a FIFO waits for a writer)."""

    def expired(signum, frame):
        raise AssertionError(f"the read blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def default_limits(monkeypatch):
    monkeypatch.delenv("VAELAB_MAX_READ_BYTES", raising=False)


def idx_header(dtype_code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, dtype_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


READERS = {
    "read_bytes": lambda path: read_bytes(path),
    "read_text": lambda path: read_text(path),
    "read_csv": lambda path: read_csv(path),
    "read_idx": lambda path: read_idx(path),
}


# ---------------------------------------------------------------- only regular files


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
class TestOnlyRegularFiles:
    def test_a_named_pipe_is_refused_without_waiting_for_a_writer(self, reader, tmp_path):
        pipe = tmp_path / "pipe"
        os.mkfifo(pipe)
        with no_hang(), pytest.raises(VaelabError, match=r"pipe: is a named pipe \(FIFO\)"):
            reader(pipe)

    def test_dev_zero_is_refused_as_a_device(self, reader):
        with no_hang(), pytest.raises(VaelabError, match="/dev/zero: is a device, not a regular"):
            reader("/dev/zero")

    def test_a_directory_is_refused(self, reader, tmp_path):
        with pytest.raises(VaelabError, match=f"^{tmp_path}: is a directory, expected "):
            reader(tmp_path)

    def test_a_symlink_loop_is_refused_in_one_line(self, reader, tmp_path):
        loop = tmp_path / "loop"
        os.symlink("loop", loop)
        with pytest.raises(VaelabError, match="loop: too many levels of symbolic links"):
            reader(loop)

    def test_a_missing_file_keeps_its_message(self, reader, tmp_path):
        with pytest.raises(VaelabError, match=f"^{tmp_path / 'nope'}: file not found$"):
            reader(tmp_path / "nope")


def test_a_path_swapped_for_a_pipe_after_the_check_is_refused(tmp_path, monkeypatch):
    """The type is checked again on the open descriptor; the open itself does not block."""
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    real_stat = os.stat
    monkeypatch.setattr(
        _io.os, "stat", lambda p, *a, **k: real_stat(regular if Path(p) == pipe else p, *a, **k)
    )
    with no_hang(), pytest.raises(VaelabError, match="is a named pipe"):
        read_bytes(pipe)


def test_a_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with pytest.raises(VaelabError, match="is a socket, not a regular file"):
            read_bytes(path)


# ---------------------------------------------------------------- limits


def test_a_file_over_the_limit_is_refused_naming_its_size_the_limit_and_the_way_out(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(11))
    assert read_bytes(path, limit=11) == bytes(11)
    with pytest.raises(VaelabError) as info:
        read_bytes(path, limit=10)
    assert str(info.value) == (
        f"{path}: 11 bytes (11 bytes) is more than the 10 bytes (10 bytes) vaelab reads; "
        "set VAELAB_MAX_READ_BYTES to a larger number of bytes to read it"
    )


def test_the_reported_size_is_not_trusted(monkeypatch):
    """/proc files report a size of 0: the read still stops after the limit."""
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    assert b"VmPeak" in read_bytes(status)
    with pytest.raises(VaelabError, match="/proc/self/status: the file is more than the 100 bytes"):
        read_bytes(status, limit=100)


def test_default_limits_follow_the_kind_of_file(tmp_path):
    assert default_limit("runs/r/config.json") == TEXT_LIMIT == 16 << 20
    assert default_limit("runs/r/metrics.csv") == TEXT_LIMIT
    assert default_limit("runs/r/model.safetensors") == FILE_LIMIT == 4 << 30
    assert CSV_LIMIT == 2 << 30
    config = tmp_path / "config.json"
    config.write_bytes(b" " * (TEXT_LIMIT + 1))
    with pytest.raises(VaelabError, match="config.json: 16.0 MiB .* more than the 16.0 MiB"):
        read_bytes(config)


def test_vaelab_max_read_bytes_raises_and_lowers_every_limit(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_bytes(b" " * (TEXT_LIMIT + 1))
    monkeypatch.setenv("VAELAB_MAX_READ_BYTES", str(TEXT_LIMIT + 1))
    assert len(read_bytes(config)) == TEXT_LIMIT + 1
    monkeypatch.setenv("VAELAB_MAX_READ_BYTES", "100")
    small = write_idx(tmp_path / "x.gz", np.zeros((10, 4, 4), np.uint8), compress=True)
    with pytest.raises(VaelabError, match=r"\(160 bytes\), more than the 100 bytes"):
        read_idx(small)
    csv = tmp_path / "a.csv"
    csv.write_text(HEADER_4 + "1,2,3,4,5\n" * 20)
    with pytest.raises(VaelabError, match="a.csv: 218 bytes .* more than the 100 bytes"):
        read_csv(csv)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_bad_vaelab_max_read_bytes_is_one_line(tmp_path, monkeypatch, value):
    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setenv("VAELAB_MAX_READ_BYTES", value)
    with pytest.raises(VaelabError, match="VAELAB_MAX_READ_BYTES: expected a positive number"):
        read_bytes(tmp_path / "f")


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
class TestIdxHeader:
    def write(self, tmp_path: Path, payload: bytes, compress: bool) -> Path:
        path = tmp_path / ("x.gz" if compress else "x")
        path.write_bytes(gzip.compress(payload) if compress else payload)
        return path

    @pytest.mark.parametrize("ndim", [5, 255])
    def test_more_than_four_dimensions_is_refused(self, tmp_path, compress, ndim):
        path = self.write(tmp_path, bytes([0, 0, 8, ndim]) + bytes(4 * ndim), compress)
        with pytest.raises(VaelabError, match=f"declares {ndim} dimensions; vaelab reads 1 to 4"):
            read_idx(path)

    def test_zero_dimensions_is_refused(self, tmp_path, compress):
        path = self.write(tmp_path, bytes([0, 0, 8, 0]), compress)
        with pytest.raises(VaelabError, match="declares 0 dimensions"):
            read_idx(path)

    def test_a_header_claiming_terabytes_is_refused_before_any_allocation(self, tmp_path, compress):
        path = self.write(tmp_path, idx_header(0x0E, (60000, 10000, 10000)) + bytes(64), compress)
        error, peak = refusal_and_peak_memory(read_idx, path)
        assert "declares shape (60000, 10000, 10000) (48000000000000 bytes), more than the 4.0" in (
            str(error)
        )
        assert peak < 1 << 20

    def test_a_header_ending_early_is_refused(self, tmp_path, compress):
        path = self.write(tmp_path, bytes([0, 0, 8, 3, 0, 0]), compress)
        with pytest.raises(VaelabError, match="file ends inside the IDX header"):
            read_idx(path)

    def test_more_data_than_declared_is_refused(self, tmp_path, compress):
        path = self.write(tmp_path, idx_header(0x08, (2, 2)) + bytes(5), compress)
        holds = "more than 4 bytes" if compress else "5 bytes"
        with pytest.raises(VaelabError, match=rf"\(2, 2\) \(4 bytes\) but the file holds {holds}"):
            read_idx(path)

    def test_0_images_is_refused(self, tmp_path, compress):
        images = self.write(tmp_path, idx_header(0x08, (0, 28, 28)), compress)
        labels = write_idx(tmp_path / "labels", np.zeros(0, np.uint8))
        with pytest.raises(VaelabError, match=f"^{images}: holds 0 images$"):
            read_idx_split(images, labels)

    def test_images_of_0x0_pixels_are_refused(self, tmp_path, compress):
        images = self.write(tmp_path, idx_header(0x08, (3, 0, 0)), compress)
        labels = write_idx(tmp_path / "labels", np.zeros(3, np.uint8))
        with pytest.raises(VaelabError, match=f"^{images}: images of 0x0 pixels"):
            read_idx_split(images, labels)


def test_a_gzip_bomb_stops_at_the_declared_size_in_little_memory(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_bomb())
    assert path.stat().st_size < 2 << 20
    error, peak = refusal_and_peak_memory(read_idx, path)
    assert str(error) == (
        f"{path}: IDX header declares shape (300, 4, 4) (4800 bytes) but the file holds more than "
        "4800 bytes of data"
    )
    assert peak < 100 << 20  # a chunk or a few of 16 MiB, not the 1 GiB it inflates to


def test_a_gzip_bomb_declaring_its_full_size_is_held_to_the_limit(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_bomb((BOMB_INFLATES_TO,)))
    with pytest.raises(VaelabError, match=r"\(1073741824 bytes\), more than the 1.0 MiB"):
        read_idx(path, limit=1 << 20)


def test_a_valid_gzip_file_with_a_bad_crc_is_still_corrupt(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.arange(64, dtype=np.uint8).reshape(4, 4, 4), True)
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC in the trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(VaelabError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_idx_files_read_back_in_several_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("vaelab.data.idx._CHUNK", 7)
    images = np.random.default_rng(0).integers(0, 255, (5, 6, 7), dtype=np.uint8)
    for compress in (False, True):
        path = write_idx(tmp_path / f"x{compress}", images, compress=compress)
        np.testing.assert_array_equal(read_idx(path), images)


# ---------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        ("9" * 5000, r"99999999999999999999\.\.\. \(5000 digits\)"),
        ("-" + "9" * 5000, r"-99999999999999999999\.\.\. \(5000 digits\)"),
        ("18446744073709551621", "18446744073709551621"),  # 2**64 + 5: no wrap-around
    ],
)
def test_a_huge_number_names_its_line_and_column(tmp_path, field, shown):
    path = tmp_path / "a.csv"
    path.write_text(HEADER_4 + "1,2,3,4,5\n" + f"1,2,3,{field},5\n")
    with pytest.raises(VaelabError, match=rf"line 3, column 4 \(pixel3\): {shown} is outside"):
        read_csv(path)


def test_leading_zeros_are_still_a_number(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HEADER_4 + "1,2,3," + "0" * 5000 + "7,5\n")
    pixels, labels = read_csv(path)
    assert pixels.tolist() == [[2, 3, 7, 5]] and labels.tolist() == [1]


def test_csv_is_parsed_in_blocks_with_the_right_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(csvfile, "_BLOCK", 16)
    rows = [f"{i % 10},{i % 256},2,3,4" for i in range(200)]
    path = tmp_path / "a.csv"
    path.write_text(HEADER_4 + "\r\n".join(rows) + "\r\n")
    pixels, labels = read_csv(path)
    assert labels.tolist() == [i % 10 for i in range(200)]
    assert pixels[:, 0].tolist() == [i % 256 for i in range(200)]
    rows[150] = "1,2,300,4,5"
    path.write_text(HEADER_4 + "\n\n".join(rows) + "\n")  # blank lines between rows
    with pytest.raises(VaelabError, match=r"line 302, column 3 \(pixel2\): 300 is outside"):
        read_csv(path)


def test_a_csv_of_nul_bytes_is_refused_without_decoding_it_all(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(bytes(64 << 20))
    with pytest.raises(VaelabError) as info:
        read_csv(path)
    assert str(info.value) == (
        f"{path}: line 1: missing header, expected 'label,pixel1,...,pixelD' but found '"
        + "\\x00" * 40
        + "'"
    )


def test_a_bad_byte_late_in_a_csv_is_still_not_text(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER_4.encode() + b"1,2,3,4,256\n" * 3 + b"1,2,\xff,4,5\n")
    with pytest.raises(VaelabError, match=r"not a text file \(byte 58 is not UTF-8\)"):
        read_csv(path)


# ---------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def child_memory() -> int:
    """The address-space limit for a vaelab process: 1.5 GiB, or more where torch maps more
    (a CUDA build); reading a gzip bomb or /dev/zero whole would pass either by far."""
    probe = run_python(
        "import vaelab.cli, torch; torch.zeros(1)\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1])"
    )
    assert probe.returncode == 0, probe.stderr
    return max(CHILD_MEMORY, int(probe.stdout.strip()) * 1024 + HEADROOM)


def run_limited(work: Path, memory: int, *args: str):
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return finish(start_vaelab(*args, cwd=work, preexec_fn=limit_memory), timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /dev/zero are Linux's")
def test_cli_process_refuses_a_gzip_bomb_under_a_memory_limit(tmp_path, child_memory):
    directory = idx_dir(tmp_path)
    (directory / "train-images-idx3-ubyte.gz").write_bytes(gzip_bomb())
    result = run_limited(
        tmp_path, child_memory, "train", "--data-dir", "data", "--runs-dir", "runs"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "vaelab: error: data/train-images-idx3-ubyte.gz: IDX header declares shape (300, 4, 4) "
        "(4800 bytes) but the file holds more than 4800 bytes of data"
    ]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /dev/zero are Linux's")
def test_cli_process_refuses_dev_zero_under_a_memory_limit(tmp_path, child_memory):
    _, test = csv_pair(tmp_path)
    result = run_limited(
        tmp_path,
        child_memory,
        "train",
        "--train-csv",
        "/dev/zero",
        "--test-csv",
        test,
        "--runs-dir",
        "runs",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "vaelab: error: /dev/zero: is a device, not a regular file; expected a CSV file"
    ]
