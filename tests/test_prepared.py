"""Sources that must be decoded are prepared once into the cache and mapped from there while they
are unchanged; a change rebuilds them; a preparation cut short is never trusted."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import synthetic_images, write_csv, write_idx_files
from vaelab.config import DataConfig
from vaelab.data import load_dataset
from vaelab.data import prepared as prepared_module
from vaelab.data.folder import load_folder
from vaelab.data.prepared import MANIFEST, Source, cache_root, prepare
from vaelab.data.sources import prepare_source
from vaelab.errors import VaelabError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))


def write_folder(root: Path, count: int = 12, side: int = 5, seed: int = 0) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def builds(load_it) -> int:
    """How many preparations `load_it()` made."""
    prepared_module.PREPARED_HERE.clear()
    load_it()
    return len(prepared_module.PREPARED_HERE)


def load(path: Path, **options) -> object:
    return load_dataset(DataConfig(source=str(path), test_split=2, **options))


class TestFolder:
    def test_prepared_once_then_mapped_with_the_same_images(self, tmp_path):
        write_folder(tmp_path / "f")
        config = DataConfig(source=str(tmp_path / "f"), test_split=2)
        in_memory = load_folder(tmp_path / "f", None, config)
        loaded = []
        assert builds(lambda: loaded.append(load_dataset(config))) == 1
        assert builds(lambda: loaded.append(load_dataset(config))) == 0
        for dataset in loaded:
            assert dataset.train_images.mapped
            assert dataset.train_images.file.parent.parent == cache_root()
            assert torch.equal(dataset.train_images.tensor(), in_memory.train_images.tensor())
            assert torch.equal(dataset.test_labels, in_memory.test_labels)
            assert dataset.class_names == ("even", "odd") and dataset.source == str(tmp_path / "f")

    def test_a_changed_added_or_removed_file_rebuilds_it(self, tmp_path):
        write_folder(tmp_path / "f")
        load(tmp_path / "f")
        black = np.zeros((5, 5, 3), dtype=np.uint8)
        Image.fromarray(black).save(tmp_path / "f" / "even" / "000.png")
        assert builds(lambda: load(tmp_path / "f")) == 1
        every = torch.cat([load(tmp_path / "f").train_images.tensor(),
                           load(tmp_path / "f").test_images.tensor()])  # fmt: skip
        assert (every.sum(dim=1) == 0).sum() == 1  # the black image is there
        Image.fromarray(black).save(tmp_path / "f" / "odd" / "new.png")
        assert builds(lambda: load(tmp_path / "f")) == 1
        (tmp_path / "f" / "odd" / "new.png").unlink()
        assert builds(lambda: load(tmp_path / "f")) == 1
        assert builds(lambda: load(tmp_path / "f")) == 0

    def test_a_touched_file_with_the_same_bytes_is_not_rebuilt(self, tmp_path):
        write_folder(tmp_path / "f")
        load(tmp_path / "f")
        os.utime(tmp_path / "f" / "odd" / "001.png", ns=(1, 2))
        assert builds(lambda: load(tmp_path / "f")) == 0

    def test_another_image_size_is_another_preparation(self, tmp_path):
        write_folder(tmp_path / "f")
        small = load(tmp_path / "f", image_size=(3, 4))
        assert small.shape == (3, 3, 4)
        assert load(tmp_path / "f").shape == (3, 5, 5)
        assert len([p for p in cache_root().iterdir() if p.is_dir()]) == 2

    def test_the_same_source_from_another_working_directory_is_named_as_given(
        self, tmp_path, monkeypatch
    ):
        write_folder(tmp_path / "f")
        monkeypatch.chdir(tmp_path)
        load(Path("f"))
        monkeypatch.chdir(tmp_path / "f")
        dataset = load(Path("."))
        assert dataset.source == "." and dataset.train_images.where == "."


class TestNeverTrustedHalfMade:
    def test_a_preparation_cut_short_is_removed_and_built_again(self, tmp_path):
        write_folder(tmp_path / "f")
        dataset = load(tmp_path / "f")
        folder = dataset.train_images.file.parent
        leftover = folder.parent / f".{folder.name}.4242.tmp"
        leftover.mkdir()
        (leftover / "images.npy").write_bytes(b"half")
        (folder / MANIFEST).unlink()  # as if the rename had never happened
        again = []
        assert builds(lambda: again.append(load(tmp_path / "f"))) == 1
        again = again[0]
        assert not leftover.exists()
        assert torch.equal(again.train_images.tensor(), dataset.train_images.tensor())

    @pytest.mark.parametrize("damage", ["not json", '{"format": "other"}', "[]"])
    def test_a_damaged_manifest_is_rebuilt_not_an_error(self, tmp_path, damage):
        write_folder(tmp_path / "f")
        folder = load(tmp_path / "f").train_images.file.parent
        (folder / MANIFEST).write_text(damage)
        assert builds(lambda: load(tmp_path / "f")) == 1
        assert json.loads((folder / MANIFEST).read_text())["format"] == prepared_module.FORMAT

    def test_a_failed_preparation_leaves_nothing(self, tmp_path):
        write_folder(tmp_path / "f")
        (tmp_path / "f" / "odd" / "bad.png").write_bytes(b"not a png")
        with pytest.raises(VaelabError, match="bad.png: not an image Pillow can read"):
            load(tmp_path / "f")
        assert [p.name for p in cache_root().iterdir() if not p.name.endswith(".lock")] == []

    def test_two_at_once_prepare_it_once(self, tmp_path):
        write_folder(tmp_path / "f", count=40)
        source = Source("folder", tmp_path / "f", None, DataConfig())
        said: list[str] = []
        threads = [threading.Thread(target=prepare, args=(source, False, said.append))
                   for _ in range(3)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(said) == 1


class TestOtherFormats:
    def test_idx_files_are_prepared_with_their_labels(self, tmp_path):
        names = {"train-images": "train-images-idx3-ubyte.gz", "train-labels":
                 "train-labels-idx1-ubyte.gz", "test-images": "t10k-images-idx3-ubyte.gz",
                 "test-labels": "t10k-labels-idx1-ubyte.gz"}  # fmt: skip
        arrays = write_idx_files(tmp_path / "idx", names)
        dataset = load_dataset(DataConfig(source=str(tmp_path / "idx")))
        assert dataset.train_images.mapped and dataset.test_images.mapped
        assert torch.equal(dataset.test_labels, torch.from_numpy(arrays["test-labels"]).long())
        expected = torch.from_numpy(arrays["train-images"]).flatten(1) / 255
        assert torch.equal(dataset.train_images.tensor(), expected)

    def test_csv_is_prepared(self, tmp_path):
        pixels, labels = synthetic_images(20)
        write_csv(tmp_path / "d.csv", pixels.reshape(20, -1), labels)
        dataset = load(tmp_path / "d.csv")
        assert dataset.train_images.mapped and dataset.labelled

    def test_a_compressed_npz_is_prepared_in_its_type(self, tmp_path):
        values = np.random.default_rng(1).random((10, 4, 4)).astype(np.float32)
        np.savez_compressed(tmp_path / "d.npz", images=values, labels=np.arange(10) % 2)
        dataset = load(tmp_path / "d.npz")
        assert dataset.train_images.mapped and dataset.train_images.stored_dtype == torch.float32
        every = torch.cat([dataset.train_images.tensor(), dataset.test_images.tensor()])
        assert sorted(every.flatten().tolist()) == sorted(values.flatten().tolist())

    def test_a_test_set_of_another_shape_is_refused_before_writing(self, tmp_path):
        np.savez_compressed(tmp_path / "a.npz", images=np.zeros((4, 3, 3), np.uint8))
        np.savez_compressed(tmp_path / "b.npz", images=np.zeros((4, 5, 5), np.uint8))
        with pytest.raises(VaelabError, match="test images are 5x5 .* training images"):
            load_dataset(
                DataConfig(source=str(tmp_path / "a.npz"), test_source=str(tmp_path / "b.npz"))
            )


class TestWhereItCannotBeWritten:
    def test_an_unwritable_cache_reads_into_memory_with_a_note(self, tmp_path, monkeypatch, caplog):
        write_folder(tmp_path / "f")
        blocker = tmp_path / "file"
        blocker.write_text("")
        monkeypatch.setenv("VAELAB_CACHE", str(blocker / "cache"))
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            dataset = load(tmp_path / "f")
        assert not dataset.train_images.mapped
        assert any("reading" in r.getMessage() and "into memory" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

    def test_a_disk_too_small_is_refused_naming_the_bytes(self, tmp_path, monkeypatch):
        write_folder(tmp_path / "f")
        monkeypatch.setattr("vaelab._resources.free_disk", lambda path: 100)
        with pytest.raises(
            VaelabError,
            match=r"preparing 12 images needs 900 bytes .* of disk in .*, 100 bytes .* available",
        ):
            load(tmp_path / "f")


class TestPrepareCommand:
    def test_prepare_then_up_to_date(self, tmp_path, cli):
        write_folder(tmp_path / "f")
        code, out, _ = cli("prepare", str(tmp_path / "f"))
        assert code == 0 and out.startswith("prepared: 12 images (900 bytes) in ")
        code, out, _ = cli("prepare", str(tmp_path / "f"))
        assert code == 0 and out.startswith("up to date: 12 images")

    def test_what_needs_no_preparing_is_said_in_one_line(self, tmp_path, cli):
        np.save(tmp_path / "x.npy", np.zeros((3, 2, 2), np.uint8))
        code, _, err = cli("prepare", str(tmp_path / "x.npy"))
        assert code == 2 and "mapped as they are; nothing to prepare" in err
        code, _, err = cli("prepare", "fashion-mnist")
        assert code == 2 and "built-in dataset" in err

    def test_the_api_returns_where_and_what(self, tmp_path):
        write_folder(tmp_path / "f")
        done = prepare_source(str(tmp_path / "f"))
        assert (done.folder / "images.npy").is_file() and done.images == 12 and not done.reused
        assert prepare_source(DataConfig(source=str(tmp_path / "f"))).reused


def test_a_run_says_whether_it_prepared_its_images_or_found_them_prepared(tmp_path):
    from vaelab.config import ModelConfig, RunConfig, TrainConfig
    from vaelab.training import train

    write_folder(tmp_path / "f", count=20)
    config = RunConfig(
        model=ModelConfig(hidden=(8,)), data=DataConfig(test_split=4),
        train=TrainConfig(epochs=1, batch_size=4, device="cpu", precision="32"),
    )  # fmt: skip
    said: list[list[str]] = [[], []]
    prepared_module.PREPARED_HERE.clear()
    train(config, data=str(tmp_path / "f"), log=said[0].append)
    prepared_module.PREPARED_HERE.clear()  # as in a later process
    train(config, data=str(tmp_path / "f"), log=said[1].append)
    assert "mapped from the copy prepared now in " in said[0][1]
    assert "mapped from the copy prepared earlier in " in said[1][1]
