"""What the readers pass over is said, once, with the reason: folders inside class folders,
files that are not images, hidden image files, folders beside the splits read, .npz arrays and
IDX files not read; and test images that are also training images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write_idx
from vaelab.config import DataConfig
from vaelab.data import load_dataset
from vaelab.data.images import Images
from vaelab.data.overlap import remembered_shared_count, shared_count
from vaelab.data.sources import prepare_source


def grey(n: int, seed: int, side: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def pngs(folder: Path, images: np.ndarray, prefix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{prefix}{index:03d}.png")


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("note: ")]


def load(caplog: pytest.LogCaptureFixture, **config: object) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vaelab.data"):
        load_dataset(DataConfig(**config))  # type: ignore[arg-type]
    return notes(caplog)


class TestFolderSaysWhatItPassesOver:
    def test_a_folder_inside_a_class_folder_is_named(self, tmp_path, caplog):
        pngs(tmp_path / "imgs" / "a", grey(10, 1))
        pngs(tmp_path / "imgs" / "b", grey(10, 2))
        pngs(tmp_path / "imgs" / "b" / "more", grey(3, 3))
        told = load(caplog, source=str(tmp_path / "imgs"))
        assert len(told) == 1
        assert "not read: 1 folder(s) inside class folders" in told[0]
        assert str(tmp_path / "imgs" / "b" / "more") in told[0]

    def test_other_files_and_hidden_images_are_named_dot_files_are_not(self, tmp_path, caplog):
        pngs(tmp_path / "imgs", grey(20, 1))
        (tmp_path / "imgs" / "notes.txt").write_text("hello")
        (tmp_path / "imgs" / "._000.png").write_bytes(b"AppleDouble")
        (tmp_path / "imgs" / ".DS_Store").write_bytes(b"x")
        (told,) = load(caplog, source=str(tmp_path / "imgs"))
        assert "1 file(s) that are not images, e.g. " in told
        assert "notes.txt" in told
        assert "1 hidden file(s) named like images" in told and "._000.png" in told
        assert "DS_Store" not in told

    def test_folders_beside_the_splits_read_are_named(self, tmp_path, caplog):
        for split, seed in (("train", 1), ("test", 2), ("val", 3)):
            pngs(tmp_path / "imgs" / split, grey(10, seed))
        (told,) = load(caplog, source=str(tmp_path / "imgs"))
        assert f"{tmp_path / 'imgs' / 'val'} beside the splits read" in told

    def test_the_test_folder_passed_over_for_test_data_is_named(self, tmp_path, caplog):
        for split, seed in (("train", 1), ("test", 2)):
            pngs(tmp_path / "imgs" / split, grey(10, seed))
        pngs(tmp_path / "held", grey(5, 4))
        (told,) = load(caplog, source=str(tmp_path / "imgs"), test_source=str(tmp_path / "held"))
        assert f"{tmp_path / 'imgs' / 'test'} (the test set is {tmp_path / 'held'})" in told

    def test_a_plain_folder_says_nothing(self, tmp_path, caplog):
        pngs(tmp_path / "imgs" / "a", grey(10, 1))
        pngs(tmp_path / "imgs" / "b", grey(10, 2))
        assert load(caplog, source=str(tmp_path / "imgs")) == []

    def test_the_note_is_told_once_when_prepared_and_again_from_the_copy(self, tmp_path, caplog):
        pngs(tmp_path / "imgs", grey(20, 1))
        (tmp_path / "imgs" / "notes.txt").write_text("hello")
        first = load(caplog, source=str(tmp_path / "imgs"))
        again = load(caplog, source=str(tmp_path / "imgs"))
        assert len(first) == 1 and again == first


class TestArraysAndIdxFilesNotRead:
    def test_npz_arrays_not_read_are_named(self, tmp_path, caplog):
        x, y = grey(20, 1), np.arange(20) % 2
        np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=grey(5, 2), y_test=y[:5],
                 x_val=grey(3, 3), y_val=y[:3])  # fmt: skip
        (told,) = load(caplog, source=str(tmp_path / "d.npz"))
        assert "not read: the array(s) x_val, y_val" in told

    def test_labels_left_unread_by_choice_are_not_named(self, tmp_path, caplog):
        np.savez(tmp_path / "d.npz", images=grey(20, 1), labels=np.arange(20) % 2)
        assert load(caplog, source=str(tmp_path / "d.npz"), labels=False) == []

    def test_idx_files_of_a_split_not_read_are_named(self, tmp_path, caplog):
        for name, seed in (("train", 1), ("t10k", 2), ("val", 3)):
            write_idx(tmp_path / f"{name}-images-idx3-ubyte", grey(10, seed))
            write_idx(tmp_path / f"{name}-labels-idx1-ubyte", np.zeros(10, np.uint8))
        (told,) = load(caplog, source=str(tmp_path))
        assert told == (
            f"note: {tmp_path}: not read: val-images-idx3-ubyte (no split images), "
            "val-labels-idx1-ubyte (no split labels)"
        )

    def test_an_unreadable_labels_file_beside_the_images_is_named(self, tmp_path, caplog):
        images = write_idx(tmp_path / "train-images-idx3-ubyte", grey(20, 1))
        labels = tmp_path / "train-labels-idx1-ubyte"
        labels.symlink_to(tmp_path / "gone")  # unreadable, as root too
        (told,) = load(caplog, source=str(images))
        assert told == (
            f"note: {tmp_path}: not read: 1 file(s) named like IDX files, e.g. {labels}: file "
            "not found"
        )


class TestTestImagesInTheTrainingSet:
    def test_shared_images_are_counted_by_their_bytes(self):
        train = grey(30, 1)
        test = np.concatenate([train[[4, 9]], grey(3, 2), train[[4]]])
        count = shared_count(Images.of(train, (1, 5, 5), "train"), Images.of(test, (1, 5, 5), "t"))
        assert count == 3  # both copies of image 4, and image 9

    def test_images_of_another_stored_type_are_not_compared(self):
        train = grey(10, 1)
        test = train.astype(np.float32) / 255
        assert shared_count(Images.of(train, (1, 5, 5), "a"), Images.of(test, (1, 5, 5), "b")) == 0

    def test_a_partial_overlap_is_noted_with_the_count(self, tmp_path, caplog):
        train = grey(40, 1)
        np.save(tmp_path / "train.npy", train)
        np.save(tmp_path / "test.npy", np.concatenate([train[:3], grey(7, 2)]))
        told = load(caplog, source=str(tmp_path / "train.npy"),
                    test_source=str(tmp_path / "test.npy"))  # fmt: skip
        assert told == [
            f"note: {tmp_path / 'test.npy'}: 3 of the 10 test images are also in the training "
            f"set ({tmp_path / 'train.npy'}), byte for byte; the test loss on them flatters the "
            "model"
        ]

    def test_a_test_set_wholly_inside_the_training_set_is_said_plainly(self, tmp_path, caplog):
        pngs(tmp_path / "imgs" / "train", grey(20, 1))
        pngs(tmp_path / "imgs" / "test", grey(20, 1)[5:9], prefix="t")
        (told,) = load(caplog, source=str(tmp_path / "imgs"))
        assert "all 4 test images are also in the training set" in told
        assert "give a test set apart from the training images" in told

    def test_the_command_line_says_it_and_trains(self, tmp_path, cli, caplog):
        np.save(tmp_path / "x.npy", grey(40, 1))
        data = tmp_path / "x.npy"
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            result = cli("train", "--data", data, "--test-data", data, "--epochs", "1",
                         "--batch-size", "10", "--hidden", "8", "--no-plots", "--no-tensorboard",
                         "--runs-dir", tmp_path / "runs", "--name", "r")  # fmt: skip
        assert result.code == 0, result.err
        assert "all 40 test images are also in the training set" in caplog.text

    def test_disjoint_sets_say_nothing(self, tmp_path, caplog):
        np.save(tmp_path / "train.npy", grey(40, 1))
        np.save(tmp_path / "test.npy", grey(10, 2))
        assert load(caplog, source=str(tmp_path / "train.npy"),
                    test_source=str(tmp_path / "test.npy")) == []  # fmt: skip

    def test_the_count_of_mapped_files_is_remembered_until_they_change(self, tmp_path, monkeypatch):
        train = grey(40, 1)
        np.save(tmp_path / "train.npy", train)
        np.save(tmp_path / "test.npy", train[:2])
        monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
        config = DataConfig(source=str(tmp_path / "train.npy"),
                            test_source=str(tmp_path / "test.npy"))  # fmt: skip
        dataset = load_dataset(config)
        assert remembered_shared_count(dataset.train_images, dataset.test_images) == 2
        assert len(list((tmp_path / "cache" / "overlaps").iterdir())) == 1
        np.save(tmp_path / "test.npy", train[:3])  # another size: another memo
        dataset = load_dataset(config)
        assert remembered_shared_count(dataset.train_images, dataset.test_images) == 3

    def test_a_prepared_source_notes_it_too(self, tmp_path, caplog):
        pngs(tmp_path / "imgs" / "train", grey(20, 1))
        pngs(tmp_path / "imgs" / "test", grey(20, 1)[:2], prefix="t")
        prepare_source(str(tmp_path / "imgs"))
        (told,) = load(caplog, source=str(tmp_path / "imgs"))
        assert "2 of the 2" not in told and "all 2 test images" in told


class TestIntegerPixelsOfANarrowRange:
    """Integer pixels read as value / 255 (or / 65535) that use a small part of that scale are
    nearly black images: said, with the fix that fits the scale they look stored in."""

    def test_digits_stored_0_to_16_as_uint8_are_said(self, tmp_path, caplog):
        np.save(tmp_path / "d.npy", np.random.default_rng(0).integers(0, 17, (50, 8, 8), np.uint8))
        (told,) = load(caplog, source=str(tmp_path / "d.npy"))
        assert told.startswith(f"note: {tmp_path / 'd.npy'}: uint8 pixels reach at most 16 of 255")
        assert "if 16 is their full scale" in told and "divide by it" in told

    def test_0_1_images_are_told_to_be_bool(self, tmp_path, caplog):
        np.save(tmp_path / "d.npy", (grey(50, 1) > 128).astype(np.uint8))
        (told,) = load(caplog, source=str(tmp_path / "d.npy"))
        assert "reach at most 1 of 255" in told and "give them as bool" in told

    def test_8_bit_values_in_uint16_are_said(self, tmp_path, caplog):
        np.save(tmp_path / "d.npy", grey(50, 1).astype(np.uint16))
        (told,) = load(caplog, source=str(tmp_path / "d.npy"))
        assert "uint16 pixels reach at most 255 of 65535" in told

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.bool_, np.float32])
    def test_pixels_using_their_scale_are_not_said(self, tmp_path, caplog, dtype):
        images = grey(50, 1)
        if dtype == np.uint16:
            images = images.astype(np.uint16) * 257
        elif dtype == np.bool_:
            images = images > 128
        elif dtype == np.float32:
            images = images.astype(np.float32) / 255 / 16  # floats are what they say they are
        np.save(tmp_path / "d.npy", images)
        assert load(caplog, source=str(tmp_path / "d.npy")) == []

    def test_one_bright_image_among_dark_ones_is_found(self, tmp_path, caplog):
        images = np.zeros((10_000, 4, 4), np.uint8)
        images[-1] = 255  # the last row is always among those looked at
        np.save(tmp_path / "d.npy", images)
        assert load(caplog, source=str(tmp_path / "d.npy")) == []
