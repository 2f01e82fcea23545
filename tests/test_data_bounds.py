"""Sizes from the user bounded before anything is decoded or resized, data that is not what it
claims refused, and one reader per format: the tutorial's CSV options read as --data reads."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bad_input_cases import IDX_STEMS
from tests.helpers import synthetic_images, write_csv, write_idx_files
from vaelab.config import DataConfig
from vaelab.data import imagefile as imagefile_module
from vaelab.data import load_csv_dataset, load_dataset
from vaelab.data.imagefile import check_resized, decode_bytes
from vaelab.data.npyfile import read_npz
from vaelab.errors import VaelabError


def png_folder(root: Path, count: int = 6, side: int = 5) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        image = rng.integers(0, 256, (side, side), dtype=np.uint8)
        Image.fromarray(image).save(root / f"{index}.png")
    return root


def png_bytes(side: int = 4) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(out, format="PNG")
    return out.getvalue()


class TestResizingIsBoundedFirst:
    def test_a_side_past_what_pillow_decodes_is_refused_with_the_figures(self, tmp_path):
        with pytest.raises(VaelabError, match=r"image_size 100000x90000 is 9,000,000,000 pixels"):
            check_resized(3, (100000, 90000), tmp_path, None)

    def test_the_resized_bytes_are_held_to_the_read_limit(self, tmp_path, monkeypatch):
        monkeypatch.setenv("VAELAB_MAX_READ_BYTES", "10000")
        with pytest.raises(VaelabError, match=r"resizing 3 images to 100x100 \(29.3 KiB\) is "
                           r"more than the 9.8 KiB \(10000 bytes\) vaelab reads"):  # fmt: skip
            check_resized(3, (100, 100), tmp_path, None)
        check_resized(1, (100, 100), tmp_path, None)

    def test_the_resized_bytes_are_held_to_free_memory(self, tmp_path, monkeypatch):
        monkeypatch.setattr("vaelab._resources.available_memory", lambda: 5000)
        with pytest.raises(VaelabError, match="resizing 3 images to 100x100 needs 29.3 KiB"):
            check_resized(3, (100, 100), tmp_path, None)

    def test_a_prepared_copy_is_held_to_free_disk(self, tmp_path, monkeypatch):
        monkeypatch.setattr("vaelab._resources.free_disk", lambda folder: 5000)
        with pytest.raises(VaelabError, match=r"resizing 3 images to 100x100 needs .* of disk"):
            check_resized(3, (100, 100), tmp_path, tmp_path / "images.npy")

    def test_nothing_is_decoded_before_the_check(self, tmp_path, monkeypatch):
        root = png_folder(tmp_path / "imgs")
        decoded = []
        monkeypatch.setattr(imagefile_module, "decode_chunk", lambda *a: decoded.append(a))
        monkeypatch.setattr("vaelab._resources.free_disk", lambda folder: 100000)
        config = DataConfig(source=str(root), image_size=(200, 200))
        with pytest.raises(VaelabError, match="resizing 6 images to 200x200 needs 234.4 KiB"):
            load_dataset(config)
        assert decoded == []

    def test_one_image_is_not_resized_past_its_budget(self):
        with pytest.raises(VaelabError, match=r"x.png: the image resized to 100x100 is more than"):
            decode_bytes(png_bytes(), "x.png", (100, 100), budget=9999)
        array, _ = decode_bytes(png_bytes(), "x.png", (100, 100), budget=10000)
        assert array.shape == (1, 100, 100)

    def test_resized_images_are_decoded_in_chunks_of_bounded_bytes(self, tmp_path, monkeypatch):
        root = png_folder(tmp_path / "imgs", count=5)
        sizes = []
        decode = imagefile_module.decode_chunk
        monkeypatch.setattr(imagefile_module, "_CHUNK_BYTES", 3 * 10 * 10 * 2)  # two RGB images
        monkeypatch.setattr(
            imagefile_module,
            "decode_chunk",
            lambda files, *a: sizes.append(len(files)) or decode(files, *a),
        )
        images = imagefile_module.decode_all(tuple(sorted(root.iterdir())), root, (10, 10), 1)
        assert sizes == [2, 2, 1] and images.shape == (5, 1, 10, 10)

    def test_a_folder_within_the_bounds_is_resized(self, tmp_path):
        root = png_folder(tmp_path / "imgs", count=10)
        dataset = load_dataset(DataConfig(source=str(root), image_size=(7, 3), test_split=2))
        assert dataset.shape == (1, 7, 3)


class TestImageSizeIsNotIgnored:
    def test_a_csv_file_of_another_size_is_refused(self, tmp_path):
        pixels, labels = synthetic_images(20, side=4, seed=1)
        write_csv(tmp_path / "d.csv", pixels.reshape(20, -1), labels)
        config = DataConfig(source=str(tmp_path / "d.csv"), image_size=(8, 8))
        with pytest.raises(VaelabError, match="images are 4x4, image_size says 8x8"):
            load_dataset(config)

    def test_the_size_the_images_have_is_accepted(self, tmp_path):
        pixels, labels = synthetic_images(20, side=4, seed=1)
        write_csv(tmp_path / "d.csv", pixels.reshape(20, -1), labels)
        dataset = load_dataset(DataConfig(source=str(tmp_path / "d.csv"), image_size=(4, 4)))
        assert dataset.image_shape == (4, 4)


class TestBuiltinReadingOptions:
    def test_an_image_size_other_than_its_own_is_refused_before_any_download(self):
        config = DataConfig(dataset="mnist", image_size=(32, 32), data_dir="/nonexistent")
        with pytest.raises(VaelabError, match="mnist: images are 28x28, image_size says 32x32"):
            load_dataset(config)

    def test_class_names_rename_its_classes(self, tmp_path):
        write_idx_files(tmp_path, IDX_STEMS)  # the MNIST family's four .gz files
        ten = tuple("abcdefghij")
        dataset = load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path), class_names=ten))
        assert dataset.class_names == ten
        with pytest.raises(VaelabError, match="class_names names 2 classes but the dataset has 10"):
            load_dataset(
                DataConfig(dataset="mnist", data_dir=str(tmp_path), class_names=("a", "b"))
            )


class TestNpzMembers:
    def npz(self, path: Path, payload: bytes, declared: bytes | None = None) -> Path:
        """An .npz whose member `images.npy` holds `payload`, declared (size, CRC) as
        `declared`."""
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("images.npy", payload)
        if declared is not None:
            packed = path.read_bytes()
            for old, new in ((zlib.crc32(payload), zlib.crc32(declared)),
                             (len(payload), len(declared))):  # fmt: skip
                packed = packed.replace(struct.pack("<I", old), struct.pack("<I", new))
            path.write_bytes(packed)
        return path

    def array_bytes(self) -> bytes:
        out = io.BytesIO()
        np.save(out, np.arange(16, dtype=np.uint8).reshape(1, 4, 4))
        return out.getvalue()

    def test_data_past_the_declared_size_is_refused(self, tmp_path):
        raw = self.array_bytes()
        path = self.npz(tmp_path / "d.npz", raw + b"more", declared=raw)
        with pytest.raises(VaelabError, match=r"d.npz \(images\): data past the 144 bytes"):
            read_npz(path)

    def test_a_corrupt_member_is_still_called_corrupt(self, tmp_path):
        raw = self.array_bytes()
        path = self.npz(tmp_path / "d.npz", raw, declared=raw[:-1] + b"\x00")
        with pytest.raises(VaelabError, match=r"(corrupt|not a valid) .npz file"):
            read_npz(path)

    def test_a_sound_member_reads(self, tmp_path):
        path = self.npz(tmp_path / "d.npz", self.array_bytes())
        np.testing.assert_array_equal(read_npz(path)["images"].ravel(), np.arange(16))


class TestBigEndianArrays:
    @pytest.mark.parametrize("dtype", [">u2", ">f4", ">f8"])
    def test_a_big_endian_npy_trains_and_evaluates(self, tmp_path, dtype, cli):
        values = np.random.default_rng(0).random((40, 4, 4))
        stored = (values * 65535).astype(dtype) if dtype == ">u2" else values.astype(dtype)
        np.save(tmp_path / "x.npy", stored)
        common = ["--runs-dir", tmp_path / "runs", "--name", "r", "--no-plots"]
        result = cli("train", "--data", tmp_path / "x.npy", "--epochs", "1", "--batch-size",
                     "8", "--hidden", "8", "--no-tensorboard", *common)  # fmt: skip
        assert result.code == 0, result.err
        result = cli("evaluate", tmp_path / "runs" / "r", "--iw-samples", "2")
        assert result.code == 0, result.err


class TestLegacyCsvOptions:
    def pair(self, tmp_path: Path, labelled: bool = True) -> DataConfig:
        for name, seed in (("train", 1), ("test", 2)):
            pixels, labels = synthetic_images(30, side=4, seed=seed)
            path = write_csv(tmp_path / f"{name}.csv", pixels.reshape(30, -1), labels)
            if not labelled:
                lines = path.read_text().splitlines()
                path.write_text("\n".join(line.split(",", 1)[1] for line in lines) + "\n")
        return DataConfig(train_csv=str(tmp_path / "train.csv"),
                          test_csv=str(tmp_path / "test.csv"))  # fmt: skip

    def test_a_csv_without_labels_reads_as_through_data(self, tmp_path):
        legacy = load_dataset(self.pair(tmp_path, labelled=False))
        source = load_dataset(DataConfig(source=str(tmp_path / "train.csv"),
                                         test_source=str(tmp_path / "test.csv")))  # fmt: skip
        assert legacy.train_labels is None and source.train_labels is None
        assert legacy.test_images.fingerprint() == source.test_images.fingerprint()

    def test_the_command_line_trains_on_an_unlabelled_pair(self, tmp_path, cli):
        self.pair(tmp_path, labelled=False)
        result = cli("train", "--train-csv", tmp_path / "train.csv", "--test-csv",
                     tmp_path / "test.csv", "--no-labels", "--epochs", "1", "--batch-size", "10",
                     "--hidden", "8", "--no-plots", "--no-tensorboard", "--runs-dir",
                     tmp_path / "runs", "--name", "r")  # fmt: skip
        assert result.code == 0, result.err
        assert "30 training images, 30 for testing" in result.out

    def test_no_labels_and_class_names_apply(self, tmp_path):
        config = self.pair(tmp_path)
        assert load_dataset(replace(config, labels=False)).labelled is False
        named = load_dataset(replace(config, class_names=("a", "b")))
        assert named.class_names == ("a", "b")

    def test_the_labelled_layout_keeps_its_classes_and_images(self, tmp_path):
        self.pair(tmp_path)
        dataset = load_csv_dataset(tmp_path / "train.csv", tmp_path / "test.csv")
        pixels, labels = synthetic_images(30, side=4, seed=2)
        assert dataset.class_names == tuple(str(i) for i in range(int(labels.max()) + 1))
        np.testing.assert_array_equal(
            dataset.test_images.stored().numpy(), pixels.reshape(30, -1).astype(np.uint8)
        )

    def test_a_csv_named_otherwise_is_still_read_as_csv(self, tmp_path):
        self.pair(tmp_path)
        for name in ("train", "test"):
            (tmp_path / f"{name}.csv").rename(tmp_path / f"{name}.txt")
        config = DataConfig(train_csv=str(tmp_path / "train.txt"),
                            test_csv=str(tmp_path / "test.txt"))  # fmt: skip
        assert len(load_dataset(config).train_images) == 30

    def test_a_missing_file_is_named_as_before(self, tmp_path):
        self.pair(tmp_path)
        config = DataConfig(train_csv=str(tmp_path / "nope.csv"),
                            test_csv=str(tmp_path / "test.csv"))  # fmt: skip
        with pytest.raises(VaelabError, match="nope.csv: file not found"):
            load_dataset(config)
