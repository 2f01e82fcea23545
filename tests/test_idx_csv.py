"""IDX files of any name and CSV variants as sources: what is found where, and what is refused."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import synthetic_images, write_csv, write_idx, write_idx_files
from vaelab.config import DataConfig
from vaelab.data import load_dataset
from vaelab.data.csvfile import load_csv_dataset, load_csv_source, read_csv_images
from vaelab.data.idx import is_idx_file, load_idx_source
from vaelab.errors import VaelabError


def idx_files(
    folder: Path, names: dict[str, str], side: int = 4, compress: bool = False
) -> dict[str, np.ndarray]:
    """Write train/test images and labels under the given names; returns the arrays by role."""
    return write_idx_files(folder, names, side, compress=compress)


MNIST_NAMES = {
    "train-images": "train-images-idx3-ubyte", "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte", "test-labels": "t10k-labels-idx1-ubyte",
}  # fmt: skip


def unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)


class TestIdxNames:
    @pytest.mark.parametrize("compress", [False, True])
    def test_mnist_names_raw_or_gzip(self, tmp_path, compress):
        suffix = ".gz" if compress else ""
        names = {role: name + suffix for role, name in MNIST_NAMES.items()}
        arrays = idx_files(tmp_path / "d", names, compress=compress)
        data = load_idx_source(tmp_path / "d", None, DataConfig())
        assert torch.equal(data.train_images.tensor(), unit(arrays["train-images"]))
        assert torch.equal(data.test_labels, torch.from_numpy(arrays["test-labels"]).long())
        assert data.format == "idx" and data.class_names == ("0", "1")

    def test_other_names_pair_by_name(self, tmp_path):
        names = {
            "train-images": "mine-train-imgs-idx3-ubyte", "train-labels": "mine-train-lbl.idx1",
            "test-images": "mine_test_images.idx3", "test-labels": "mine-test-labels-idx1",
        }  # fmt: skip
        arrays = idx_files(tmp_path / "d", names)
        data = load_idx_source(tmp_path / "d", None, DataConfig(class_names=("top", "bottom")))
        assert len(data.train_images) == 30 and len(data.test_images) == 10
        assert data.class_names == ("top", "bottom")
        assert torch.equal(data.test_images.tensor(), unit(arrays["test-images"]))

    def test_kmnist_prefixed_names(self, tmp_path):
        names = {role: "kmnist-" + name for role, name in MNIST_NAMES.items()}
        idx_files(tmp_path / "k", names, compress=True)
        data = load_idx_source(tmp_path / "k", None, DataConfig())
        assert data.class_names == ("0", "1")  # never Fashion-MNIST's names

    def test_emnist_images_are_transposed(self, tmp_path):
        names = {
            "train-images": "emnist-balanced-train-images-idx3-ubyte",
            "train-labels": "emnist-balanced-train-labels-idx1-ubyte",
            "test-images": "emnist-balanced-test-images-idx3-ubyte",
            "test-labels": "emnist-balanced-test-labels-idx1-ubyte",
        }
        arrays = idx_files(tmp_path / "e", names)
        data = load_idx_source(tmp_path / "e", None, DataConfig())
        expected = unit(arrays["train-images"].transpose(0, 2, 1).copy())
        assert torch.equal(data.train_images.tensor(), expected)

    def test_several_emnist_splits_are_ambiguous_until_a_file_is_named(self, tmp_path):
        for split in ("balanced", "letters"):
            idx_files(tmp_path / "e", {
                "train-images": f"emnist-{split}-train-images-idx3-ubyte",
                "train-labels": f"emnist-{split}-train-labels-idx1-ubyte",
                "test-images": f"emnist-{split}-test-images-idx3-ubyte",
                "test-labels": f"emnist-{split}-test-labels-idx1-ubyte",
            })  # fmt: skip
        with pytest.raises(VaelabError, match="several train images files could be meant") as info:
            load_idx_source(tmp_path / "e", None, DataConfig())
        assert "emnist-balanced-train-images-idx3-ubyte" in str(info.value)
        given = tmp_path / "e" / "emnist-letters-train-images-idx3-ubyte"
        data = load_idx_source(given, None, DataConfig())
        assert len(data.test_images) == 10 and data.labelled

    @pytest.mark.parametrize("level", ["root", "name", "raw"])
    def test_torchvision_layout(self, tmp_path, level):
        raw = tmp_path / "root" / "MNIST" / "raw"
        idx_files(raw, MNIST_NAMES)
        for name in MNIST_NAMES.values():  # torchvision keeps the .gz beside the raw file
            (raw / (name + ".gz")).write_bytes(gzip.compress((raw / name).read_bytes()))
        (tmp_path / "root" / "MNIST" / "processed").mkdir()
        path = {"root": tmp_path / "root", "name": raw.parent, "raw": raw}[level]
        data = load_idx_source(path, None, DataConfig())
        assert len(data.train_images) == 30 and len(data.test_images) == 10
        told = load_dataset(DataConfig(source=str(path)))  # the format told from the path
        assert told.format == "idx" and len(told.train_images) == 30

    def test_images_file_given_finds_labels_and_test_beside_it(self, tmp_path):
        arrays = idx_files(tmp_path / "d", MNIST_NAMES)
        data = load_idx_source(tmp_path / "d" / MNIST_NAMES["train-images"], None, DataConfig())
        assert torch.equal(data.test_images.tensor(), unit(arrays["test-images"]))
        assert data.labelled

    def test_images_only_is_unlabelled(self, tmp_path):
        names = {"train-images": "train-images-idx3-ubyte", "test-images": "t10k-images-idx3-ubyte"}
        idx_files(tmp_path / "d", names)
        data = load_idx_source(tmp_path / "d", None, DataConfig())
        assert not data.labelled and data.class_names == ()

    def test_labels_false_ignores_labels(self, tmp_path):
        idx_files(tmp_path / "d", MNIST_NAMES)
        (tmp_path / "d" / MNIST_NAMES["test-labels"]).write_bytes(b"broken")  # never read
        data = load_idx_source(tmp_path / "d", None, DataConfig(labels=False))
        assert not data.labelled

    def test_without_test_files_a_seeded_split(self, tmp_path):
        names = {
            "train-images": "train-images-idx3-ubyte",
            "train-labels": "train-labels-idx1-ubyte",
        }
        idx_files(tmp_path / "d", names)
        config = DataConfig(test_split=0.2, split_seed=3)
        first = load_idx_source(tmp_path / "d", None, config)
        again = load_idx_source(tmp_path / "d", None, config)
        assert len(first.test_images) == 6 and len(first.train_images) == 24
        assert torch.equal(first.test_images.tensor(), again.test_images.tensor())

    def test_test_path_names_the_test_set(self, tmp_path):
        names = {
            "train-images": "train-images-idx3-ubyte",
            "train-labels": "train-labels-idx1-ubyte",
        }
        idx_files(tmp_path / "a", names)
        test_names = {
            "test-images": "t10k-images-idx3-ubyte",
            "test-labels": "t10k-labels-idx1-ubyte",
        }
        arrays = idx_files(tmp_path / "b", test_names)
        data = load_idx_source(tmp_path / "a", tmp_path / "b", DataConfig())
        assert torch.equal(data.test_images.tensor(), unit(arrays["test-images"]))

    def test_is_idx_file(self, tmp_path):
        raw = write_idx(tmp_path / "a", np.zeros((2, 3, 3), np.uint8))
        packed = write_idx(tmp_path / "b.gz", np.zeros(4, np.uint8), compress=True)
        (tmp_path / "c.csv").write_text("label,p1\n")
        assert is_idx_file(raw) and is_idx_file(packed)
        assert not is_idx_file(tmp_path / "c.csv") and not is_idx_file(tmp_path)


class TestIdxRefusals:
    def test_no_training_images_lists_what_was_found(self, tmp_path):
        idx_files(tmp_path / "d", {"test-labels": "t10k-labels-idx1-ubyte"})
        with pytest.raises(VaelabError, match=r"no train images .*t10k-labels-idx1-ubyte \(test"):
            load_idx_source(tmp_path / "d", None, DataConfig())

    def test_empty_folder(self, tmp_path):
        (tmp_path / "d").mkdir()
        with pytest.raises(VaelabError, match="no IDX files found"):
            load_idx_source(tmp_path / "d", None, DataConfig())

    def test_labels_only_for_train(self, tmp_path):
        names = dict(MNIST_NAMES)
        del names["test-labels"]
        idx_files(tmp_path / "d", names)
        with pytest.raises(VaelabError, match="t10k-images-idx3-ubyte: no labels, but"):
            load_idx_source(tmp_path / "d", None, DataConfig())

    def test_a_labels_file_given_as_images(self, tmp_path):
        idx_files(tmp_path / "d", MNIST_NAMES)
        with pytest.raises(VaelabError, match="an IDX labels file"):
            load_idx_source(tmp_path / "d" / MNIST_NAMES["train-labels"], None, DataConfig())

    def test_file_named_idx_that_is_not(self, tmp_path):
        idx_files(tmp_path / "d", MNIST_NAMES)
        (tmp_path / "d" / MNIST_NAMES["test-images"]).write_bytes(b"\x01\x02junk")
        with pytest.raises(VaelabError, match="t10k-images-idx3-ubyte: not an IDX file"):
            load_idx_source(tmp_path / "d", None, DataConfig())

    def test_class_names_too_few(self, tmp_path):
        idx_files(tmp_path / "d", MNIST_NAMES)
        with pytest.raises(VaelabError, match="idx1-ubyte: label 1 but only 1 class names"):
            load_idx_source(tmp_path / "d", None, DataConfig(class_names=("only",)))

    def test_train_and_test_sizes_differ(self, tmp_path):
        idx_files(tmp_path / "a", {"train-images": "train-images-idx3-ubyte"}, side=4)
        idx_files(tmp_path / "a", {"test-images": "t10k-images-idx3-ubyte"}, side=5)
        with pytest.raises(VaelabError, match="test images are 5x5 with 1 channel but"):
            load_idx_source(tmp_path / "a", None, DataConfig())


def csv_text(pixels: np.ndarray, labels: np.ndarray | None, header: str | None = None) -> str:
    columns = [f"pixel{i + 1}" for i in range(pixels.shape[1])]
    if labels is not None:
        columns = ["label", *columns]
    lines = [header or ",".join(columns)]
    for i, row in enumerate(pixels):
        values = ([int(labels[i])] if labels is not None else []) + [int(v) for v in row]
        lines.append(",".join(map(str, values)))
    return "\n".join(lines) + "\n"


class TestCsvVariants:
    def setup_method(self):
        images, labels = synthetic_images(20, side=3, seed=4)
        self.pixels, self.labels = images.reshape(20, -1), labels

    def test_gzip_and_bom(self, tmp_path):
        text = csv_text(self.pixels, self.labels)
        plain = tmp_path / "a.csv"
        plain.write_bytes(b"\xef\xbb\xbf" + text.encode())
        packed = tmp_path / "a.csv.gz"
        packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode()))
        for path in (plain, packed):
            pixels, labels = read_csv_images(path)
            np.testing.assert_array_equal(pixels, self.pixels)
            np.testing.assert_array_equal(labels, self.labels)

    def test_pixel_header_is_unlabelled(self, tmp_path):
        path = tmp_path / "a.csv"
        path.write_text(csv_text(self.pixels, None))
        pixels, labels = read_csv_images(path)
        assert labels is None
        np.testing.assert_array_equal(pixels, self.pixels)
        data = load_csv_source(path, None, DataConfig(test_split=5))
        assert not data.labelled and len(data.test_images) == 5 and data.format == "csv"

    def test_1x1_pixel_names_are_pixels(self, tmp_path):
        path = tmp_path / "a.csv"
        header = ",".join(f"{r}x{c}" for r in range(1, 4) for c in range(1, 4))
        path.write_text(csv_text(self.pixels, None, header))
        assert read_csv_images(path)[1] is None

    def test_labels_false_drops_the_label_column(self, tmp_path):
        path = write_csv(tmp_path / "a.csv", self.pixels, self.labels)
        data = load_csv_source(path, None, DataConfig(labels=False))
        assert not data.labelled and data.input_dim == 9

    def test_seeded_split_keeps_order(self, tmp_path):
        path = write_csv(tmp_path / "a.csv", self.pixels, self.labels)
        config = DataConfig(test_split=0.25, split_seed=7)
        data = load_csv_source(path, None, config)
        again = load_csv_source(path, None, config)
        assert len(data.test_images) == 5 and torch.equal(data.test_labels, again.test_labels)
        other = load_csv_source(path, None, DataConfig(test_split=0.25, split_seed=8))
        assert not torch.equal(data.test_images.tensor(), other.test_images.tensor())

    def test_test_path_and_class_names(self, tmp_path):
        train = write_csv(tmp_path / "a.csv", self.pixels, self.labels)
        test = write_csv(tmp_path / "b.csv", self.pixels[:4], self.labels[:4])
        data = load_csv_source(train, test, DataConfig(class_names=("x", "y")))
        assert data.class_names == ("x", "y") and len(data.test_images) == 4

    def test_csv_pair_names_classes_by_index(self, tmp_path):
        train = write_csv(tmp_path / "a.csv", self.pixels, self.labels)
        data = load_csv_dataset(train, train)
        assert data.class_names == ("0", "1") and data.format == "csv"

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            ("name,p1,p2,p3,p4,p5,p6,p7,p8,p9", "names neither a label column first"),
            ("pixel1,pixel2,colour,p4,p5,p6,p7,p8,p9", "names neither a label column first"),
            ("1,2,3,4,5,6,7,8,9", "missing header"),
            ("pixel1,pixel2,pixel3", "3 pixel columns is not a square"),
        ],
    )
    def test_bad_headers(self, tmp_path, header, message):
        path = tmp_path / "a.csv"
        path.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
        with pytest.raises(VaelabError, match=message) as info:
            read_csv_images(path)
        assert str(path) in str(info.value)

    def test_an_unlabelled_pair_reads_as_a_source_does(self, tmp_path):
        path = tmp_path / "a.csv"
        path.write_text(csv_text(self.pixels, None))
        dataset = load_csv_dataset(path, path)
        assert not dataset.labelled and len(dataset.test_images) == len(self.pixels)

    def test_gzip_truncated(self, tmp_path):
        path = tmp_path / "a.csv.gz"
        packed = gzip.compress(csv_text(self.pixels, self.labels).encode())
        path.write_bytes(packed[: len(packed) // 2])
        with pytest.raises(VaelabError, match="corrupt or truncated gzip"):
            read_csv_images(path)

    def test_gzip_bomb_stops_at_the_limit(self, tmp_path, monkeypatch):
        path = tmp_path / "a.csv.gz"
        path.write_bytes(gzip.compress(b"label," + b"0" * (8 << 20)))
        monkeypatch.setenv("VAELAB_MAX_READ_BYTES", str(1 << 20))
        with pytest.raises(VaelabError, match="the decompressed text is more than"):
            read_csv_images(path)

    def test_labelled_train_unlabelled_test(self, tmp_path):
        train = write_csv(tmp_path / "a.csv", self.pixels, self.labels)
        test = tmp_path / "b.csv"
        test.write_text(csv_text(self.pixels, None))
        with pytest.raises(VaelabError, match="b.csv: no labels, but .*a.csv has them"):
            load_csv_source(train, test, DataConfig())
        assert not load_csv_source(train, test, DataConfig(labels=False)).labelled


@pytest.mark.slow
def test_fashion_mnist_under_other_names_trains_as_the_builtin(tmp_path, fashion_mnist):
    """The real Fashion-MNIST, unzipped under other names, is the same data to the model."""
    from vaelab.config import RunConfig, TrainConfig
    from vaelab.data import SYSTEM_DATA_DIR
    from vaelab.training import train

    ours = tmp_path / "mydata"
    ours.mkdir()
    renamed = {"train-images-idx3-ubyte": "train-imgs-idx3-ubyte",
               "train-labels-idx1-ubyte": "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte": "t10k-imgs-idx3-ubyte",
               "t10k-labels-idx1-ubyte": "t10k-labels-idx1-ubyte"}  # fmt: skip
    for stem, name in renamed.items():
        with gzip.open(SYSTEM_DATA_DIR / f"{stem}.gz") as source, open(ours / name, "wb") as out:
            shutil.copyfileobj(source, out)
    data = load_idx_source(ours / "train-imgs-idx3-ubyte", None, DataConfig())
    assert torch.equal(data.test_images.tensor(), fashion_mnist.test_images.tensor())
    config = RunConfig(train=TrainConfig(epochs=1, device="cpu", precision="32"))
    mine = train(config, data, log=None).history[-1].test_loss
    builtin = train(config, fashion_mnist, log=None).history[-1].test_loss
    assert abs(mine - builtin) <= 1e-6
