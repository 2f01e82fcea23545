"""Parquet files, Arrow files and Hugging Face datasets saved to disk as a source: found by their
layout, decoded batch by batch into the prepared cache, and every bad input refused in one line."""

from __future__ import annotations

import inspect
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cases_arrow import REFUSED, chw, datasets, grey, hf, pa, png, rgb, table
from vaelab.config import DataConfig
from vaelab.data import load_dataset
from vaelab.data import prepared as prepared_module
from vaelab.data.arrowfile import read_arrow
from vaelab.data.sources import prepare_source, source_kind
from vaelab.data.splits import split_indices
from vaelab.errors import VaelabError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    datasets.disable_progress_bars()


def load(source: Path, **options) -> object:
    options.setdefault("test_split", 2)
    return load_dataset(DataConfig(source=str(source), **options))


def builds(load_it) -> int:
    """How many preparations `load_it()` made."""
    prepared_module.PREPARED_HERE.clear()
    load_it()
    return len(prepared_module.PREPARED_HERE)


def stored(dataset, split: str = "train") -> torch.Tensor:
    """The images of a split as stored (uint8), N x C x H x W."""
    images = getattr(dataset, f"{split}_images")
    return images.stored().reshape(len(images), *dataset.shape)


def every_image(dataset) -> torch.Tensor:
    """The images of a seeded split put back in their order in the source."""
    total = len(dataset.train_images) + len(dataset.test_images)
    kept, held = split_indices(total, len(dataset.test_images), 0, "test_split")
    images = torch.empty((total, *dataset.shape), dtype=torch.uint8)
    images[kept] = stored(dataset)
    images[held] = stored(dataset, "test")
    return images


# ---------------------------------------------------------------- layouts


class TestLayouts:
    def test_a_parquet_file_with_class_labels(self, tmp_path):
        images, labels = grey(10), [i % 3 for i in range(10)]
        hf(images, labels, ("cat", "dog", "eel")).to_parquet(tmp_path / "d.parquet")
        dataset = load(tmp_path / "d.parquet")
        assert dataset.format == "parquet" and dataset.shape == (1, 5, 4)
        assert dataset.class_names == ("cat", "dog", "eel")
        assert torch.equal(every_image(dataset), chw(images))
        assert dataset.train_images.mapped  # from the prepared copy, not held in memory
        kept, held = split_indices(10, 2, 0, "test_split")
        assert dataset.test_labels.tolist() == [labels[i] for i in held.tolist()]

    def test_a_hub_folder_splits_by_file_names(self, tmp_path):
        train, test = rgb(7, seed=1), rgb(3, seed=2)
        hub = tmp_path / "data"
        hf(train, [0, 1] * 3 + [0], ("a", "b")).to_parquet(hub / "train-00000-of-00001.parquet")
        hf(test, [1, 0, 1], ("a", "b")).to_parquet(hub / "test-00000-of-00001.parquet")
        (tmp_path / "README.md").write_text("a dataset card")
        dataset = load(tmp_path)
        assert torch.equal(stored(dataset), chw(train))
        assert torch.equal(stored(dataset, "test"), chw(test))
        assert dataset.test_labels.tolist() == [1, 0, 1] and dataset.class_names == ("a", "b")
        assert dataset.shape == (3, 5, 4)

    def test_shards_are_read_in_order_and_split_folders_name_splits(self, tmp_path):
        images = grey(9)
        for shard, rows in enumerate((slice(0, 5), slice(5, 9))):
            hf(images[rows]).to_parquet(tmp_path / f"train/{shard:04d}.parquet")
        hf(grey(2, seed=3)).to_parquet(tmp_path / "test/0000.parquet")
        dataset = load(tmp_path)
        assert torch.equal(stored(dataset), chw(images))
        assert len(dataset.test_images) == 2 and not dataset.labelled

    def test_a_dataset_saved_to_disk(self, tmp_path):
        images = rgb(8)
        hf(images, [0, 1] * 4, ("no", "yes")).save_to_disk(tmp_path / "saved")
        assert source_kind(tmp_path / "saved") == "arrow"
        dataset = load(tmp_path / "saved")
        assert dataset.format == "arrow" and dataset.class_names == ("no", "yes")
        assert torch.equal(every_image(dataset), chw(images))

    def test_a_dataset_dict_saved_to_disk(self, tmp_path, caplog):
        train, test = grey(6, seed=1), grey(2, seed=2)
        splits = {
            "train": hf(train, [0, 1, 2, 0, 1, 2], ("x", "y", "z")),
            "validation": hf(grey(3, seed=4), [0, 0, 0], ("x", "y", "z")),
            "test": hf(test, [2, 2], ("x", "y", "z")),
        }
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "dict")
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            dataset = load(tmp_path / "dict")
        assert torch.equal(stored(dataset), chw(train))
        assert torch.equal(stored(dataset, "test"), chw(test))
        assert dataset.test_labels.tolist() == [2, 2] and dataset.class_names == ("x", "y", "z")
        assert "validation not read" in caplog.text

    def test_one_split_of_a_dataset_dict_and_an_arrow_file(self, tmp_path):
        datasets.DatasetDict({"train": hf(grey(4)), "test": hf(grey(2))}).save_to_disk(
            tmp_path / "dict"
        )
        assert len(load(tmp_path / "dict" / "train").train_images) == 2
        arrow = next((tmp_path / "dict" / "test").glob("*.arrow"))
        assert len(load(arrow, test_split=1).train_images) == 1

    def test_an_arrow_ipc_file_of_the_random_access_format(self, tmp_path):
        images = grey(5)
        data = pa.table({"img": [png(image) for image in images]})
        with (
            pa.OSFile(str(tmp_path / "d.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, data.schema) as writer,
        ):
            writer.write_table(data, max_chunksize=2)
        assert torch.equal(every_image(load(tmp_path / "d.arrow", test_split=1)), chw(images))

    def test_a_separate_test_source(self, tmp_path):
        hf(grey(6, seed=1), [0, 1] * 3).to_parquet(tmp_path / "train.parquet")
        hf(grey(3, seed=2), [1, 1, 0]).to_parquet(tmp_path / "other.parquet")
        config = DataConfig(source=str(tmp_path / "train.parquet"),
                            test_source=str(tmp_path / "other.parquet"))  # fmt: skip
        dataset = load_dataset(config)
        assert len(dataset.train_images) == 6 and dataset.test_labels.tolist() == [1, 1, 0]
        assert torch.equal(stored(dataset, "test"), chw(grey(3, seed=2)))

    def test_a_test_source_with_splits_gives_its_test_split(self, tmp_path):
        hf(grey(4, seed=1)).to_parquet(tmp_path / "train.parquet")
        splits = {"train": hf(grey(5, seed=2)), "test": hf(grey(3, seed=3))}
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "other")
        config = DataConfig(source=str(tmp_path / "train.parquet"),
                            test_source=str(tmp_path / "other"))  # fmt: skip
        assert torch.equal(stored(load_dataset(config), "test"), chw(grey(3, seed=3)))

    def test_splits_of_other_names_need_a_train_split(self, tmp_path):
        splits = {"first": hf(grey(2)), "second": hf(grey(2))}
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "d")
        with pytest.raises(VaelabError, match="which split is the training set"):
            load(tmp_path / "d")

    def test_the_kind_is_told_from_the_path(self, tmp_path):
        table(tmp_path / "hub/data/train-0.parquet", img=[png(grey(1)[0])])
        Image.fromarray(grey(1)[0]).save(tmp_path / "a.png")
        assert source_kind(tmp_path / "hub") == "arrow"
        assert source_kind(tmp_path / "hub/data/train-0.parquet") == "arrow"
        assert source_kind(tmp_path) == "folder"  # images at its top: an image folder


# ---------------------------------------------------------------- columns and images


class TestColumns:
    def test_plain_binary_images_and_an_integer_label_column(self, tmp_path):
        images = grey(150, seed=5)
        labels = np.arange(150) % 4
        table(tmp_path / "d.parquet", row_group_size=40,
              png=[png(i) for i in images], label=labels, note=["x"] * 150)  # fmt: skip
        dataset = load(tmp_path / "d.parquet", test_split=10)
        assert torch.equal(every_image(dataset), chw(images))
        assert dataset.class_names == ("0", "1", "2", "3")

    def test_columns_name_the_images_and_the_labels(self, tmp_path):
        images = grey(6)
        table(tmp_path / "d.arrow", a=[png(i) for i in images], b=[png(i) for i in grey(6, 3, 3)],
              target=[5, 4, 3, 2, 1, 0])  # fmt: skip
        with pytest.raises(VaelabError, match=r"more than one image column \(a, b\); name the one"):
            load(tmp_path / "d.arrow")
        dataset = load(tmp_path / "d.arrow", columns=("b", "target"), test_split=1)
        assert dataset.shape == (1, 3, 3) and dataset.labelled
        assert not load(tmp_path / "d.arrow", columns=("a",), test_split=1).labelled

    def test_labels_false_reads_none(self, tmp_path):
        hf(grey(4), [0, 1, 0, 1], ("a", "b")).to_parquet(tmp_path / "d.parquet")
        dataset = load(tmp_path / "d.parquet", labels=False, test_split=1)
        assert not dataset.labelled and dataset.class_names == ()

    def test_images_are_resized_to_image_size(self, tmp_path):
        images = [rgb(1, 8, 6)[0], rgb(1, 4, 4, seed=1)[0], rgb(1, 5, 9, seed=2)[0]]
        table(tmp_path / "d.parquet", image=[png(i) for i in images])
        with pytest.raises(VaelabError, match=r"d.parquet row 1: an image of 4x4, but the first"):
            load(tmp_path / "d.parquet", test_split=1)
        dataset = load(tmp_path / "d.parquet", image_size=(3, 2), test_split=1)
        assert dataset.shape == (3, 3, 2)
        expected = Image.fromarray(images[2]).resize((2, 3), Image.Resampling.BILINEAR)
        assert torch.equal(every_image(dataset)[2], chw(np.asarray(expected)[None])[0])

    def test_an_alpha_channel_is_dropped_with_a_note(self, tmp_path, caplog):
        rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 4), dtype=np.uint8)
        table(tmp_path / "d.parquet", image=[png(i) for i in rgba])
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            dataset = load(tmp_path / "d.parquet", test_split=1)
        assert torch.equal(every_image(dataset), chw(np.ascontiguousarray(rgba[..., :3])))
        assert "3 image(s) have an alpha channel (e.g. " in caplog.text

    def test_arrow_batches_are_read_in_slices_with_their_rows_named(self, tmp_path):
        images = [png(image) for image in grey(150)]
        table(tmp_path / "d.arrow", row_group_size=100, image=images)
        assert torch.equal(every_image(load(tmp_path / "d.arrow", test_split=5)), chw(grey(150)))
        images[130] = b"GIF89a broken"
        table(tmp_path / "d.arrow", row_group_size=100, image=images)
        with pytest.raises(VaelabError, match=r"d\.arrow row 130: .*cannot|d\.arrow row 130: not"):
            load(tmp_path / "d.arrow", test_split=5)

    def test_an_image_struct_that_is_null(self, tmp_path):
        kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        column = pa.array([{"bytes": png(grey(1)[0]), "path": None}, None], kind)
        table(tmp_path / "d.parquet", image=column)
        with pytest.raises(VaelabError, match=r"d\.parquet row 1: no image \(null\)$"):
            load(tmp_path / "d.parquet", test_split=1)

    def test_a_datasets_object_is_refused_with_the_way_to_save_it(self):
        from vaelab.data import as_dataset

        with pytest.raises(VaelabError, match=r"^data: a Hugging Face Dataset; save it with its "):
            as_dataset(hf(grey(3)), DataConfig())

    def test_columns_names_one_or_two_columns(self):
        with pytest.raises(VaelabError, match="columns names the image column"):
            DataConfig(columns=("a", "b", "c"))

    def test_read_in_memory_as_into_the_cache(self, tmp_path):
        hf(rgb(7), [0, 1, 2, 0, 1, 2, 0], ("a", "b", "c")).save_to_disk(tmp_path / "s")
        config = DataConfig(source=str(tmp_path / "s"), test_split=2)
        in_memory = read_arrow(tmp_path / "s", None, config)
        assert in_memory.train.file is None
        prepared = load_dataset(config)
        assert torch.equal(every_image(prepared), in_memory.train.pixels)
        assert in_memory.class_names == prepared.class_names


# ---------------------------------------------------------------- the prepared copy


class TestPrepared:
    def test_prepared_once_then_reused_and_rebuilt_when_a_file_changes(self, tmp_path):
        hf(grey(6), [0, 1] * 3).to_parquet(tmp_path / "data/train-0.parquet")
        assert builds(lambda: load(tmp_path)) == 1
        assert builds(lambda: load(tmp_path)) == 0
        black = np.zeros((6, 5, 4), np.uint8)
        hf(black, [0, 1] * 3).to_parquet(tmp_path / "data/train-0.parquet")
        assert builds(lambda: load(tmp_path)) == 1
        assert int(every_image(load(tmp_path)).sum()) == 0
        hf(grey(2), [0, 1]).to_parquet(tmp_path / "data/test-0.parquet")  # a split added
        assert builds(lambda: load(tmp_path)) == 1
        assert len(load(tmp_path).test_images) == 2

    def test_a_progress_bar_counts_rows_and_the_unread_split_is_told_once(
        self, tmp_path, caplog, capsys
    ):
        splits = {"train": hf(grey(70)), "validation": hf(grey(2)), "test": hf(grey(3))}
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "d")
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            prepared = prepare_source(DataConfig(source=str(tmp_path / "d")), progress=True)
        assert prepared.images == 73 and not prepared.reused
        assert caplog.text.count("validation not read") == 1
        assert "73/73" in capsys.readouterr().err  # the bar counts images, not files

    def test_vaelab_prepare_says_prepared_then_up_to_date(self, tmp_path, cli):
        hf(grey(5)).save_to_disk(tmp_path / "s")
        first = cli("prepare", tmp_path / "s")
        assert first.code == 0 and first.out.startswith("prepared: 5 images"), first.err
        again = cli("prepare", tmp_path / "s")
        assert again.code == 0 and again.out.startswith("up to date: 5 images"), again.err
        named = cli("prepare", tmp_path / "s", "--columns", "image")
        assert named.out.startswith("prepared: 5 images")  # another column choice, another copy

    def test_a_run_trains_on_a_parquet_source_and_reopens(self, tmp_path, cli, monkeypatch):
        monkeypatch.chdir(tmp_path)
        hf(rgb(40, 6, 6), [i % 2 for i in range(40)], ("odd", "even")).to_parquet(
            tmp_path / "d.parquet"
        )
        trained = cli("train", "--data", "d.parquet", "--epochs", 1, "--batch-size", 10,
                      "--hidden", "8,4", "--device", "cpu", "--no-tensorboard", "--no-plots",
                      "--test-split", 8, "--name", "r")  # fmt: skip
        assert trained.code == 0, trained.err
        assert "d.parquet (parquet, 3x6x6), 32 training images, 8 for testing" in trained.out
        info = json.loads((tmp_path / "runs/r/config.json").read_text())["dataset"]
        assert info["class_names"] == ["odd", "even"]
        evaluated = cli("evaluate", "runs/r", "--iw-samples", 2, "--device", "cpu")
        assert evaluated.code == 0, evaluated.err


# ---------------------------------------------------------------- bad input


def _one_line(cli, args: list[str], expect: str) -> None:
    for command in (["prepare", *args], ["train", "--epochs", 1, "--data", *args]):
        code, _, err = cli(*command)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("vaelab: error: "), err
        assert re.search(expect, lines[0].removeprefix("vaelab: error: ")), lines[0]


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_is_one_line(case, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    build, expect = REFUSED[case]
    with_env = "monkeypatch" in inspect.signature(build).parameters  # it sets the environment
    args = build(tmp_path, monkeypatch) if with_env else build(tmp_path)
    _one_line(cli, args, expect)
    assert not (tmp_path / "runs").exists()
