import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import synthetic_images, write_csv, write_idx
from vaelab.config import DataConfig
from vaelab.data import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    load_csv_dataset,
    load_dataset,
    locate_fashion_mnist,
    read_csv,
    read_idx,
    read_idx_split,
)
from vaelab.errors import VaelabError


class TestIdxReader:
    def test_reads_raw_and_gzip(self, tmp_path):
        images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
        for compress in (False, True):
            path = write_idx(tmp_path / f"x{compress}", images, compress=compress)
            np.testing.assert_array_equal(read_idx(path), images)

    def test_bad_magic_is_refused(self, tmp_path):
        path = tmp_path / "bad"
        path.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
        with pytest.raises(VaelabError, match="bad magic"):
            read_idx(path)

    def test_unknown_dtype_code_is_refused(self, tmp_path):
        path = tmp_path / "bad"
        path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x07")
        with pytest.raises(VaelabError, match="data type code 0x07"):
            read_idx(path)

    def test_truncated_data_names_sizes(self, tmp_path):
        path = write_idx(tmp_path / "x", np.zeros((3, 2, 2), np.uint8))
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(VaelabError, match=r"declares shape \(3, 2, 2\) \(12 bytes\).*11 bytes"):
            read_idx(path)

    def test_truncated_gzip_is_refused(self, tmp_path):
        images = np.random.default_rng(0).integers(0, 255, (20, 8, 8), dtype=np.uint8)
        path = write_idx(tmp_path / "x.gz", images, compress=True)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with pytest.raises(VaelabError, match="corrupt or truncated gzip"):
            read_idx(path)

    def test_missing_file_is_refused(self, tmp_path):
        with pytest.raises(VaelabError, match="file not found"):
            read_idx(tmp_path / "nope")

    def test_split_counts_must_match(self, tmp_path):
        images = write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
        labels = write_idx(tmp_path / "l", np.zeros(2, np.uint8))
        with pytest.raises(VaelabError, match="3 images but .* has 2 labels"):
            read_idx_split(images, labels)

    def test_split_rejects_labels_as_images(self, tmp_path):
        labels = write_idx(tmp_path / "l", np.zeros(2, np.uint8))
        with pytest.raises(VaelabError, match="N x H x W"):
            read_idx_split(labels, labels)


class TestCsvReader:
    def test_written_csv_reads_back_the_same_pixels_and_labels(self, tmp_path):
        pixels, labels = synthetic_images(5, side=3)
        path = write_csv(tmp_path / "a.csv", pixels.reshape(5, -1), labels)
        got_pixels, got_labels = read_csv(path)
        np.testing.assert_array_equal(got_pixels, pixels.reshape(5, -1))
        np.testing.assert_array_equal(got_labels, labels)

    def test_crlf_line_endings_are_read(self, tmp_path):
        path = tmp_path / "a.csv"
        path.write_bytes(b"label,p1,p2,p3,p4\r\n3,0,1,2,255\r\n")
        pixels, labels = read_csv(path)
        assert labels.tolist() == [3] and pixels.tolist() == [[0, 1, 2, 255]]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("", "empty file"),
            ("1,2,3,4,5\n", "line 1: missing header"),
            ("label,a,b,c\n1,2,3,4\n", "3 pixel columns is not a square"),
            ("label,a,b,c,d\n1,2,3,4,5\n1,2,3,4\n", "line 3: expected 5 columns, found 4"),
            ("label,a,b,c,d\n1,2,x,4,5\n", r"line 2, column 3 \(pixel2\): 'x' is not an integer"),
            ("label,a,b,c,d\n1,2,3.5,4,5\n", "line 2, column 3 .* not an integer"),
            ("label,a,b,c,d\n1,2,3,4,256\n", r"line 2, column 5 \(pixel4\): 256 is outside 0-255"),
            ("label,a,b,c,d\n1,2,3,4,-1\n", "-1 is outside 0-255"),
            ("label,a,b,c,d\ncat,2,3,4,5\n", r"column 1 \(label\): 'cat' is not an integer"),
            ("label,a,b,c,d\n", "no data rows"),
        ],
    )
    def test_bad_csv_names_the_place(self, tmp_path, content, message):
        path = tmp_path / "bad.csv"
        path.write_text(content)
        with pytest.raises(VaelabError, match=message) as info:
            read_csv(path)
        assert str(path) in str(info.value)

    def test_csv_files_load_as_a_dataset_of_unit_floats(self, tmp_path):
        pixels, labels = synthetic_images(6, side=2)
        train = write_csv(tmp_path / "train.csv", pixels.reshape(6, -1), labels)
        test = write_csv(tmp_path / "test.csv", pixels[:2].reshape(2, -1), labels[:2])
        dataset = load_dataset(DataConfig(train_csv=str(train), test_csv=str(test)))
        assert dataset.image_shape == (2, 2)
        assert dataset.train_images.dtype == torch.float32
        assert float(dataset.train_images.tensor().max()) <= 1.0
        assert torch.allclose(
            dataset.train_images[0] * 255, torch.from_numpy(pixels[0].reshape(-1)).float()
        )

    def test_csv_pixel_counts_must_agree(self, tmp_path):
        a = write_csv(tmp_path / "a.csv", np.zeros((2, 4), np.uint8), np.zeros(2, np.uint8))
        b = write_csv(tmp_path / "b.csv", np.zeros((2, 9), np.uint8), np.zeros(2, np.uint8))
        with pytest.raises(VaelabError, match="9 pixel columns but"):
            load_csv_dataset(a, b)


def _fake_fashion_dir(directory: Path) -> dict[str, bytes]:
    """Four small valid IDX .gz files; returns their bytes by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_images(8, side=28)
    write_idx(directory / "train-images-idx3-ubyte.gz", images, compress=True)
    write_idx(directory / "train-labels-idx1-ubyte.gz", labels, compress=True)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images[:4], compress=True)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", labels[:4], compress=True)
    return {p.name: p.read_bytes() for p in directory.iterdir()}


class TestLocate:
    def test_order_data_dir_then_env_then_cache(self, tmp_path, monkeypatch):
        explicit, env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"
        for directory in (explicit, env):
            _fake_fashion_dir(directory)
        _fake_fashion_dir(cache / "vaelab" / "fashion-mnist")
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        monkeypatch.setenv("VAELAB_DATA", str(env))
        assert locate_fashion_mnist(explicit) == explicit
        assert locate_fashion_mnist(None) == env
        monkeypatch.delenv("VAELAB_DATA")
        assert locate_fashion_mnist(None) == cache / "vaelab" / "fashion-mnist"

    def test_named_directory_lacking_a_file_is_refused(self, tmp_path):
        _fake_fashion_dir(tmp_path)
        (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
        with pytest.raises(VaelabError, match="lacks t10k-labels-idx1-ubyte.gz"):
            locate_fashion_mnist(tmp_path)

    def test_no_data_and_no_network_says_both_ways(self, tmp_path, monkeypatch):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("VAELAB_DATA", raising=False)
        monkeypatch.setattr("vaelab.data.fashion_mnist.SYSTEM_DATA_DIR", tmp_path / "none")

        def offline(url):
            raise urllib.error.URLError("Name or service not known")

        with pytest.raises(VaelabError) as info:
            locate_fashion_mnist(None, opener=offline)
        assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
        assert "data_dir" in str(info.value) and info.value.parameters == ("data_dir",)


class TestDownload:
    def test_download_verifies_and_loads(self, tmp_path, file_server, monkeypatch):
        served, url = file_server
        contents = _fake_fashion_dir(served)
        checksums = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        monkeypatch.setattr("vaelab.data.fashion_mnist.FASHION_MNIST_SHA256", checksums)
        target = download_fashion_mnist(tmp_path / "cache", base_url=url)
        assert sorted(p.name for p in target.iterdir()) == sorted(contents)
        dataset = load_dataset(DataConfig(data_dir=str(target)))
        assert len(dataset.train_images) == 8 and dataset.class_names == FASHION_MNIST_CLASSES

    def test_checksum_mismatch_is_refused(self, tmp_path, file_server):
        served, url = file_server
        _fake_fashion_dir(served)
        target = tmp_path / "cache"
        with pytest.raises(VaelabError, match="SHA-256 mismatch"):
            download_fashion_mnist(target, base_url=url)
        assert list(target.iterdir()) == []
