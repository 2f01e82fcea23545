"""Users' own images: image folders, .npy and .npz files, images in memory, and telling a source's
format from its path."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import (
    Dataset,
    arrays,
    as_dataset,
    imagefile,
    load_dataset,
    load_source,
    sources,
)
from vaelab.data.splits import split_indices
from vaelab.errors import VaelabError


def grey(n: int, height: int = 5, width: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width), dtype=np.uint8)


def rgb(n: int, height: int = 5, width: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def write_pngs(folder: Path, images: np.ndarray, mode: str | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:03d}.png"
        Image.fromarray(image, mode=mode).save(path)
        paths.append(path)
    return paths


def flat(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W (x C) images as the Dataset stores them: N x D channel-major in [0, 1]."""
    if images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)


def config(**fields) -> DataConfig:
    return DataConfig(**fields)


# ---------------------------------------------------------------- image folders


class TestFolder:
    def test_a_flat_folder_is_unlabelled_and_split_by_seed_in_file_order(self, tmp_path):
        images = grey(20)
        write_pngs(tmp_path / "f", images)
        data = load_dataset(config(source=str(tmp_path / "f"), test_split=0.25, split_seed=3))
        kept, held = split_indices(20, 0.25, 3, "test_split")
        assert data.format == "folder" and not data.labelled and data.class_names == ()
        assert data.image_shape == (5, 6) and data.channels == 1
        assert torch.equal(data.train_images.tensor(), flat(images)[kept])
        assert torch.equal(data.test_images.tensor(), flat(images)[held])

    def test_the_split_is_the_same_every_time_and_moves_with_the_seed(self, tmp_path):
        write_pngs(tmp_path / "f", grey(20))
        first, again, other = (
            load_dataset(config(source=str(tmp_path / "f"), split_seed=seed)) for seed in (1, 1, 2)
        )
        assert torch.equal(first.test_images.tensor(), again.test_images.tensor())
        assert not torch.equal(first.test_images.tensor(), other.test_images.tensor())

    def test_class_folders_name_the_classes_in_sorted_order(self, tmp_path):
        for name, seed in (("dog", 1), ("cat", 2), ("emu", 3)):
            write_pngs(tmp_path / "f" / name, grey(4, seed=seed))
        data = load_dataset(config(source=str(tmp_path / "f"), test_split=3))
        assert data.class_names == ("cat", "dog", "emu")
        labels = torch.cat([data.train_labels, data.test_labels])
        assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
        expected = torch.cat([flat(grey(4, seed=s)) for s in (2, 1, 3)])  # cat, dog, emu
        kept, held = split_indices(12, 3, 0, "test_split")
        assert torch.equal(data.train_images.tensor(), expected[kept])
        assert torch.equal(data.train_labels, torch.arange(3).repeat_interleave(4)[kept])

    def test_train_and_test_subfolders_are_the_splits(self, tmp_path):
        write_pngs(tmp_path / "f" / "train" / "a", grey(3, seed=1))
        write_pngs(tmp_path / "f" / "train" / "b", grey(3, seed=2))
        write_pngs(tmp_path / "f" / "test" / "b", grey(2, seed=3))
        data = load_dataset(config(source=str(tmp_path / "f")))
        assert torch.equal(
            data.train_images.tensor(), flat(np.concatenate([grey(3, seed=1), grey(3, seed=2)]))
        )
        assert torch.equal(data.test_images.tensor(), flat(grey(2, seed=3)))
        assert data.test_labels.tolist() == [1, 1]  # b is the training set's class 1
        assert data.class_names == ("a", "b")

    def test_a_test_folder_given_apart_is_the_test_set(self, tmp_path):
        write_pngs(tmp_path / "train", grey(6, seed=1))
        write_pngs(tmp_path / "held", grey(2, seed=2))
        data = load_dataset(
            config(source=str(tmp_path / "train"), test_source=str(tmp_path / "held"))
        )
        assert torch.equal(data.test_images.tensor(), flat(grey(2, seed=2)))
        assert len(data.train_images) == 6

    def test_rgb_images_are_three_channels_channel_major(self, tmp_path):
        images = rgb(8)
        write_pngs(tmp_path / "f", images)
        data = load_dataset(config(source=str(tmp_path / "f"), test_split=2))
        kept, _ = split_indices(8, 2, 0, "test_split")
        assert data.channels == 3 and data.shape == (3, 5, 6)
        assert torch.equal(data.train_images.tensor(), flat(images)[kept])

    def test_rgba_drops_alpha_and_says_so_once(self, tmp_path, caplog):
        images = np.random.default_rng(0).integers(0, 256, (6, 5, 6, 4), dtype=np.uint8)
        write_pngs(tmp_path / "f", images)
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            data = load_dataset(config(source=str(tmp_path / "f"), test_split=2))
        notes = [r.getMessage() for r in caplog.records if "alpha channel" in r.getMessage()]
        assert len(notes) == 1 and "6 image(s)" in notes[0]
        kept, _ = split_indices(6, 2, 0, "test_split")
        assert torch.equal(data.train_images.tensor(), flat(images[..., :3])[kept])

    def test_palette_images_become_rgb_and_16_bit_grey_is_scaled_to_8_bits(self, tmp_path):
        folder = tmp_path / "p"
        write_pngs(folder, rgb(4))
        for path in folder.iterdir():
            Image.open(path).convert("P").save(path)
        assert load_dataset(config(source=str(folder), test_split=1)).channels == 3
        wide = np.array([[0, 257, 65535], [128, 385, 65534]], dtype=np.uint16)
        folder = tmp_path / "w"
        folder.mkdir()
        for i in range(3):
            Image.fromarray(wide).save(folder / f"{i}.png")
        data = load_dataset(config(source=str(folder), test_split=1))
        assert (data.train_images[0] * 255).round().tolist() == [0, 1, 255, 0, 1, 255]

    def test_image_size_resizes_every_image_bilinearly(self, tmp_path):
        folder = tmp_path / "f"
        write_pngs(folder, grey(2, 5, 6, seed=1))
        big = grey(2, 10, 9, seed=2)
        for i, image in enumerate(big):
            Image.fromarray(image).save(folder / f"z{i}.png")
        data = load_dataset(config(source=str(folder), image_size=(4, 3), test_split=1))
        assert data.image_shape == (4, 3)
        every = torch.cat([data.train_images.tensor(), data.test_images.tensor()])
        kept, held = split_indices(4, 1, 0, "test_split")
        order = torch.cat([kept, held])
        resized = np.asarray(Image.fromarray(big[1]).resize((3, 4), Image.Resampling.BILINEAR))
        assert torch.equal(every[(order == 3).nonzero()[0, 0]], flat(resized[None])[0])

    def test_labels_false_drops_the_class_folders_labels(self, tmp_path):
        write_pngs(tmp_path / "f" / "a", grey(3))
        write_pngs(tmp_path / "f" / "b", grey(3))
        data = load_dataset(config(source=str(tmp_path / "f"), labels=False, test_split=2))
        assert not data.labelled and data.class_names == ()

    def test_class_names_rename_the_sorted_class_folders(self, tmp_path):
        write_pngs(tmp_path / "f" / "0", grey(3))
        write_pngs(tmp_path / "f" / "1", grey(3))
        data = load_dataset(
            config(source=str(tmp_path / "f"), class_names=("shoe", "bag"), test_split=2)
        )
        assert data.class_names == ("shoe", "bag")

    def test_a_pool_of_processes_reads_what_one_process_reads(self, tmp_path, monkeypatch):
        paths = tuple(write_pngs(tmp_path / "f", grey(10)))
        monkeypatch.setattr(imagefile, "_CHUNK", 3)
        one = imagefile.decode_all(paths, tmp_path, None, workers=1)
        two = imagefile.decode_all(paths, tmp_path, None, workers=2)
        assert torch.equal(one, two) and one.shape == (10, 1, 5, 6)

    def test_an_error_in_a_worker_process_is_the_same_one_line(self, tmp_path, monkeypatch):
        paths = write_pngs(tmp_path / "f", grey(10))
        paths[7].write_bytes(b"not a png")
        monkeypatch.setattr(imagefile, "_CHUNK", 3)
        with pytest.raises(VaelabError, match=r"007.png: not an image Pillow can read"):
            imagefile.decode_all(tuple(paths), tmp_path, None, workers=2)

    def test_decoded_images_beyond_the_read_limit_are_refused(self, tmp_path, monkeypatch):
        write_pngs(tmp_path / "f", grey(10))
        monkeypatch.setenv("VAELAB_MAX_READ_BYTES", "200")
        with pytest.raises(VaelabError, match="VAELAB_MAX_READ_BYTES"):
            load_dataset(config(source=str(tmp_path / "f")))


# ---------------------------------------------------------------- .npy and .npz files


class TestArrays:
    @pytest.mark.parametrize(
        "layout", ["NxHxW", "NxHxWx1", "Nx1xHxW", "NxHxWx3", "Nx3xHxW", "NxD", "NxHxWx4"]
    )
    def test_npy_layouts(self, tmp_path, layout):
        colour = rgb(10)
        images = {
            "NxHxW": colour[..., 0], "NxHxWx1": colour[..., :1],
            "Nx1xHxW": colour[..., :1].transpose(0, 3, 1, 2), "NxHxWx3": colour,
            "Nx3xHxW": colour.transpose(0, 3, 1, 2), "NxD": grey(10, 6, 6).reshape(10, 36),
            "NxHxWx4": np.concatenate([colour, colour[..., :1]], axis=3),
        }[layout]  # fmt: skip
        np.save(tmp_path / "x.npy", images)
        data = load_dataset(config(source=str(tmp_path / "x.npy"), test_split=2))
        expected = {"NxD": flat(grey(10, 6, 6)), "NxHxW": flat(colour[..., 0]),
                    "NxHxWx1": flat(colour[..., 0]), "Nx1xHxW": flat(colour[..., 0])}.get(
            layout, flat(colour)
        )  # fmt: skip
        kept, _ = split_indices(10, 2, 0, "test_split")
        assert data.format == "npy" and not data.labelled
        assert torch.equal(data.train_images.tensor(), expected[kept])

    @pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bool"])
    def test_floats_in_0_1_and_booleans_are_pixels(self, tmp_path, dtype):
        images = (grey(6) / 255.0).astype(dtype) if dtype != "bool" else grey(6) > 128
        np.save(tmp_path / "x.npy", images)
        data = load_dataset(config(source=str(tmp_path / "x.npy"), test_split=1))
        assert data.train_images.dtype == torch.float32
        assert float(data.train_images.tensor().max()) <= 1.0

    def test_npz_with_both_splits_labels_and_class_names(self, tmp_path):
        x_train, x_test = grey(8, seed=1), grey(3, seed=2)
        np.savez(
            tmp_path / "d.npz", x_train=x_train, y_train=np.arange(8) % 3, x_test=x_test,
            y_test=np.array([2, 0, 1]), class_names=np.array(["cat", "dog", "emu"]),
        )  # fmt: skip
        data = load_dataset(config(source=str(tmp_path / "d.npz")))
        assert data.format == "npz" and data.class_names == ("cat", "dog", "emu")
        assert torch.equal(data.train_images.tensor(), flat(x_train))
        assert torch.equal(data.test_images.tensor(), flat(x_test))
        assert data.test_labels.tolist() == [2, 0, 1]

    def test_npz_images_and_labels_are_split_by_seed(self, tmp_path):
        images, labels = grey(10), np.arange(10) % 2
        np.savez_compressed(tmp_path / "d.npz", images=images, labels=labels)
        data = load_dataset(config(source=str(tmp_path / "d.npz"), test_split=0.3, split_seed=5))
        kept, held = split_indices(10, 0.3, 5, "test_split")
        assert torch.equal(data.test_images.tensor(), flat(images)[held])
        assert torch.equal(data.train_labels, torch.from_numpy(labels)[kept])
        assert data.class_names == ("0", "1")

    def test_array_keys_name_four_or_two_arrays(self, tmp_path):
        np.savez(tmp_path / "d.npz", a=grey(6), b=np.zeros(6, int), c=grey(2), d=np.ones(2, int))
        four = load_dataset(config(source=str(tmp_path / "d.npz"), array_keys=("a", "b", "c", "d")))
        assert len(four.test_images) == 2 and four.test_labels.tolist() == [1, 1]
        two = load_dataset(
            config(source=str(tmp_path / "d.npz"), array_keys=("a", "b"), test_split=2)
        )
        assert len(two.train_images) == 4 and two.labelled

    def test_a_single_array_of_any_name_is_the_images(self, tmp_path):
        np.savez(tmp_path / "d.npz", grey(5))
        data = load_dataset(config(source=str(tmp_path / "d.npz"), test_split=1))
        assert len(data.train_images) == 4 and not data.labelled

    def test_a_separate_test_file(self, tmp_path):
        np.save(tmp_path / "train.npy", grey(6, seed=1))
        np.save(tmp_path / "test.npy", grey(2, seed=2))
        data = load_dataset(
            config(source=str(tmp_path / "train.npy"), test_source=str(tmp_path / "test.npy"))
        )
        assert torch.equal(data.test_images.tensor(), flat(grey(2, seed=2)))

    def test_labels_false_ignores_the_labels(self, tmp_path):
        np.savez(tmp_path / "d.npz", images=grey(6), labels=np.arange(6))
        data = load_dataset(config(source=str(tmp_path / "d.npz"), labels=False, test_split=1))
        assert not data.labelled

    def test_image_size_says_which_axis_holds_the_channels(self, tmp_path):
        images = grey(4, 3, 4)[:, :, :, None].repeat(3, axis=3)  # N x 3 x 4 x 3: ambiguous
        np.save(tmp_path / "x.npy", images)
        with pytest.raises(VaelabError, match="ambiguous"):
            load_dataset(config(source=str(tmp_path / "x.npy"), test_split=1))
        last = load_dataset(config(source=str(tmp_path / "x.npy"), image_size=(3, 4), test_split=1))
        assert last.shape == (3, 3, 4)


def _mutations(raw: bytes, count: int, seed: int = 0):
    """`count` spoiled copies of `raw`: bytes flipped, cut short, or both."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        spoiled = bytearray(raw)
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 6))):
            spoiled[i] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            spoiled = spoiled[: int(rng.integers(0, len(spoiled)))]
        yield bytes(spoiled)


class TestSpoiledFiles:
    """Random damage to a valid file: the readers give data or one VaelabError, nothing else."""

    @pytest.mark.parametrize("kind", ["npy", "npz", "npz-compressed"])
    def test_numpy_files(self, tmp_path, kind):
        path = tmp_path / f"x.{kind[:3]}"
        save = {"npy": np.save, "npz": np.savez, "npz-compressed": np.savez_compressed}[kind]
        save(path, grey(4)) if kind == "npy" else save(path, images=grey(4), labels=np.arange(4))
        raw = path.read_bytes()
        reader = arrays.read_npy if kind == "npy" else arrays.read_npz
        for spoiled in _mutations(raw, 150):
            path.write_bytes(spoiled)
            with contextlib.suppress(VaelabError):
                reader(path)

    @pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".gif"])
    def test_image_files(self, tmp_path, suffix):
        path = tmp_path / f"x{suffix}"
        Image.fromarray(rgb(1, 8, 8)[0]).save(path)
        raw = path.read_bytes()
        for spoiled in _mutations(raw, 100):
            path.write_bytes(spoiled)
            with contextlib.suppress(VaelabError):
                imagefile.decode_chunk((path,), None, 1 << 30)


# ---------------------------------------------------------------- in memory


class TestInMemory:
    def test_a_dataset_is_returned_as_it_is(self, tiny_dataset):
        assert as_dataset(tiny_dataset) is tiny_dataset

    def test_the_readme_form_an_array_loaded_from_npy(self, tmp_path):
        np.save(tmp_path / "x.npy", grey(20))
        data = as_dataset(np.load(tmp_path / "x.npy"))
        assert isinstance(data, Dataset) and data.format == "arrays"
        assert len(data.train_images) == 18 and len(data.test_images) == 2

    def test_a_tensor_of_channel_major_floats(self):
        images = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        data = as_dataset(images, DataConfig(test_split=2))
        kept, _ = split_indices(10, 2, 0, "test_split")
        assert data.shape == (3, 8, 8)
        assert torch.equal(data.train_images.tensor(), images.reshape(10, -1)[kept])

    def test_a_tuple_of_images_and_labels_with_test_data(self):
        data = as_dataset(
            (grey(6), np.arange(6) % 2), test_data=(grey(2, seed=1), np.array([1, 0]))
        )
        assert data.labelled and data.test_labels.tolist() == [1, 0]
        assert torch.equal(data.train_images.tensor(), flat(grey(6)))

    def test_a_torch_dataset_of_image_label_pairs(self):
        images = torch.rand(8, 1, 5, 5, generator=torch.Generator().manual_seed(0))
        pairs = torch.utils.data.TensorDataset(images, torch.arange(8) % 4)
        data = as_dataset(pairs, DataConfig(test_split=2))
        assert data.labelled and data.shape == (1, 5, 5)
        assert data.class_names == ("0", "1", "2", "3")

    def test_a_torch_dataset_of_pil_images(self):
        class Pictures(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return 6

            def __getitem__(self, i: int):
                return Image.fromarray(rgb(6)[i]), i % 2

        data = as_dataset(Pictures(), DataConfig(test_split=2))
        kept, _ = split_indices(6, 2, 0, "test_split")
        assert data.shape == (3, 5, 6)
        assert torch.equal(data.train_images.tensor(), flat(rgb(6))[kept])

    def test_rgba_arrays_of_both_splits_are_noted_once(self, caplog):
        images = np.random.default_rng(0).integers(0, 256, (8, 5, 5, 4), dtype=np.uint8)
        with caplog.at_level(logging.WARNING, logger="vaelab.data"):
            data = as_dataset(images[2:], test_data=images[:2])
        assert [r.getMessage() for r in caplog.records] == [
            "note: data and test_data: 4 channels (RGBA); the alpha channel is dropped"
        ]
        assert torch.equal(data.test_images.tensor(), flat(images[:2, ..., :3]))

    def test_a_path_is_read_as_a_source(self, tmp_path):
        np.save(tmp_path / "x.npy", grey(6))
        assert as_dataset(str(tmp_path / "x.npy")).format == "npy"

    @pytest.mark.parametrize(
        "data, message",
        [
            ([1, 2, 3], "list is not images"),
            ((grey(4), np.arange(3)), r"3 labels for 4 images"),
            (grey(4).astype(np.int64), "pixels of type int64 are not intensities"),
            (grey(4) * 2.0, "must lie in"),
        ],
    )
    def test_what_is_not_images_is_one_line(self, data, message):
        with pytest.raises(VaelabError, match=message):
            as_dataset(data)

    def test_train_takes_data_in_memory(self):
        import vaelab

        config = RunConfig(
            model=ModelConfig(hidden=(8, 4)),
            train=TrainConfig(epochs=1, batch_size=10, device="cpu", precision="32"),
        )
        result = vaelab.train(config, data=grey(40, 4, 4), log=None)
        assert np.isfinite(result.history[-1].test_loss)


# ---------------------------------------------------------------- telling the format


class TestSourceKind:
    def test_each_path_goes_to_its_reader(self, tmp_path, monkeypatch):
        calls = []

        class Read:
            def dataset(self, config):
                return None

        def read_prepared(source):
            calls.append(source.kind)
            return Read()

        monkeypatch.setattr("vaelab.data.prepared.read_prepared", read_prepared)
        (tmp_path / "a.csv").write_text("label,p1\n1,2\n")
        (tmp_path / "a.csv.gz").write_bytes(b"")
        idx = tmp_path / "idx"
        idx.mkdir()
        (idx / "train-images").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]))
        np.savez_compressed(tmp_path / "packed.npz", images=grey(3))
        for path in ("a.csv", "a.csv.gz", "idx", "idx/train-images", "packed.npz"):
            load_source(config(source=str(tmp_path / path)))
        assert calls == ["csv", "csv", "idx", "idx", "npz"]

    def test_a_builtin_name_goes_to_the_builtin_loader(self, monkeypatch):
        seen = []
        monkeypatch.setattr(
            "vaelab.data.builtin.load_builtin", lambda name, c, opener=None: seen.append(name)
        )
        load_source(config(source="mnist"))
        assert seen == ["mnist"]

    def test_a_folder_of_images_and_numpy_files(self, tmp_path):
        write_pngs(tmp_path / "f" / "a", grey(2))
        assert sources.source_kind(tmp_path / "f") == "folder"
        np.save(tmp_path / "x.npy", grey(2))
        assert sources.source_kind(tmp_path / "x.npy") == "arrays"

    @pytest.mark.parametrize(
        "name, message",
        [("missing", "not found"), ("notes.txt", "not a format vaelab reads"),
         ("one.png", "is one image")],
    )  # fmt: skip
    def test_what_fits_no_reader_is_one_line(self, tmp_path, name, message):
        if name != "missing":
            (tmp_path / name).write_bytes(b"hello")
        with pytest.raises(VaelabError, match=message):
            load_source(config(source=str(tmp_path / name)))

    def test_train_and_test_of_different_kinds_are_refused(self, tmp_path):
        np.save(tmp_path / "x.npy", grey(4))
        write_pngs(tmp_path / "f", grey(2))
        with pytest.raises(VaelabError, match="give both in one format"):
            load_source(config(source=str(tmp_path / "x.npy"), test_source=str(tmp_path / "f")))


# ---------------------------------------------------------------- the real data


def _class_folders(root: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    """PNGs in root/<label>/<index>.png, zero-padded: read back in label order, stable."""
    from concurrent.futures import ThreadPoolExecutor

    for label in np.unique(labels):
        (root / str(label)).mkdir(parents=True)

    def write(i: int) -> None:
        Image.fromarray(pixels[i]).save(root / str(labels[i]) / f"{i:05d}.png", compress_level=1)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(len(pixels))))


SUBSET = {"train": 60_000, "test": 10_000}  # the whole dataset


@pytest.mark.slow
def test_fashion_mnist_as_png_folders_and_npz_trains_like_the_builtin(fashion_mnist, tmp_path):
    """The same images in the same order give the same first-epoch test loss, to 1e-6: all 60,000
    training and 10,000 test images, written by class (root/split/label/index.png), so the folder
    reads them back sorted by label, stably; the built-in split is reordered the same."""
    from vaelab.training import train

    def uint8(images: torch.Tensor) -> np.ndarray:
        return (images.numpy() * 255).round().astype(np.uint8).reshape(-1, 28, 28)

    splits = {}
    for split in ("train", "test"):
        labels = getattr(fashion_mnist, f"{split}_labels")[: SUBSET[split]]
        order = torch.sort(labels, stable=True).indices
        pixels = uint8(getattr(fashion_mnist, f"{split}_images")[: SUBSET[split]][order])
        splits[split] = (pixels, labels[order].numpy())
        _class_folders(tmp_path / "png" / split, *splits[split])
    reference = Dataset(
        train_images=torch.from_numpy(splits["train"][0]), train_labels=None,
        test_images=torch.from_numpy(splits["test"][0]), test_labels=None,
        image_shape=(28, 28), class_names=(), source="reordered",
    )  # fmt: skip
    np.savez(
        tmp_path / "fm.npz", x_train=splits["train"][0], y_train=splits["train"][1],
        x_test=splits["test"][0], y_test=splits["test"][1],
    )  # fmt: skip
    folder = load_dataset(DataConfig(source=str(tmp_path / "png")))
    npz = load_dataset(DataConfig(source=str(tmp_path / "fm.npz")))
    assert torch.equal(folder.train_images.tensor(), reference.train_images.tensor())
    assert torch.equal(folder.train_labels, torch.from_numpy(splits["train"][1]))
    assert folder.class_names == tuple(str(i) for i in range(10))
    config = RunConfig(train=TrainConfig(epochs=1, device="cpu", precision="32"))
    losses = [
        train(config, data, log=None).history[-1].test_loss for data in (reference, folder, npz)
    ]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)
    assert losses[2] == pytest.approx(losses[0], abs=1e-6)
