"""Bad-input cases of IDX files of any name, CSV variants and the built-in datasets (see
tests/bad_input_cases.py)."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.bad_input_cases import RUN, SMALL, Case
from tests.helpers import synthetic_images, write_csv, write_idx, write_idx_files

MNIST = {
    "train-images": "train-images-idx3-ubyte", "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte", "test-labels": "t10k-labels-idx1-ubyte",
}  # fmt: skip


def idx_files(folder: Path, names: dict[str, str], side: int = 4) -> Path:
    """`folder` holding the IDX files `names` (role -> file name) of tiny synthetic images."""
    write_idx_files(folder, names, side, counts=(300, 100))
    return folder


def train_on(data: str, *options: str) -> list[str]:
    return ["train", *SMALL, "--data", data, *options, *RUN]


def idx_case(
    names: dict[str, str], data: str = "mine", *options: str, change: Callable[[Path], None] = print
) -> Callable[[Path], list[str]]:
    """IDX files `names` in mine/, spoilt by `change`; trains on `data`."""

    def build(work: Path) -> list[str]:
        folder = idx_files(work / "mine", names)
        if change is not print:
            change(folder)
        return train_on(data, *options)

    return build


def without(*roles: str) -> dict[str, str]:
    return {role: name for role, name in MNIST.items() if role not in roles}


def emnist_splits(work: Path) -> list[str]:
    for split in ("balanced", "letters"):
        idx_files(work / "mine", {role: f"emnist-{split}-{name.replace('t10k', 'test')}"
                                  for role, name in MNIST.items()})  # fmt: skip
    return train_on("mine")


def test_of_other_size(work: Path) -> list[str]:
    idx_files(work / "a", without("test-images", "test-labels"), side=4)
    idx_files(work / "b", {"test-images": MNIST["test-images"]}, side=5)
    return train_on("a", "--test-data", "b", "--no-labels")


def csv_rows(pixels: np.ndarray, header: str) -> str:
    return "\n".join([header, *(",".join(map(str, row)) for row in pixels)]) + "\n"


def csv_case(
    content: bytes | str, name: str = "mine.csv", *options: str
) -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        data = content.encode() if isinstance(content, str) else content
        (work / name).write_bytes(data)
        return train_on(name, *options)

    return build


PIXELS = synthetic_images(300, side=4, seed=1)[0].reshape(300, -1)
PIXEL_HEADER = ",".join(f"pixel{i + 1}" for i in range(16))
UNLABELLED = csv_rows(PIXELS, PIXEL_HEADER)


def truncated_gzip_csv() -> bytes:
    packed = gzip.compress(UNLABELLED.encode())
    return packed[: len(packed) // 2]


def labelled_train_unlabelled_test(work: Path) -> list[str]:
    pixels, labels = synthetic_images(300, side=4, seed=1)
    write_csv(work / "train.csv", pixels.reshape(300, -1), labels)
    (work / "test.csv").write_text(UNLABELLED)
    return train_on("train.csv", "--test-data", "test.csv")


def cifar_archive(spoil: str) -> Callable[[Path], list[str]]:
    """c/cifar-10-binary.tar.gz of 4 records a batch, with one thing spoilt."""

    def build(work: Path) -> list[str]:
        (work / "c").mkdir()
        rows = np.zeros((4, 3073), np.uint8)
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        with tarfile.open(work / "c" / "cifar-10-binary.tar.gz", "w:gz") as archive:
            for name in names:
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                data = rows.tobytes()[:-7] if spoil == "truncated" and name == names[0] else (
                    rows.tobytes())  # fmt: skip
                if spoil == "symlink" and name == names[-1]:
                    info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
                    archive.addfile(info)
                    continue
                if spoil == "missing" and name == names[-1]:
                    continue
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return train_on("cifar10", "--data-dir", "c")

    return build


# fmt: off
CASES: list[Case] = [
    # IDX files of any name
    Case("IDX", "a folder of IDX files without training images",
         idx_case(without("train-images", "train-labels")),
         "no train images .* found t10k-images-idx3-ubyte", "mine"),
    Case("IDX", "a folder of several EMNIST splits", emnist_splits,
         "several train images files could be meant: emnist-balanced", "mine"),
    Case("IDX", "a labels file given as the images",
         idx_case(MNIST, "mine/" + MNIST["train-labels"]),
         "an IDX labels file; give the images file or its folder", "mine/train-labels-idx1-ubyte"),
    Case("IDX", "training labels but no test labels", idx_case(without("test-labels")),
         "no labels, but .*train-labels-idx1-ubyte has them", "mine/t10k-images-idx3-ubyte"),
    Case("IDX", "a file named as IDX that is not", idx_case(
        MNIST, change=lambda d: (d / MNIST["test-labels"]).write_bytes(b"\x01\x02\x03\x04")),
         "not an IDX file .bad magic number.", "mine/t10k-labels-idx1-ubyte"),
    Case("IDX", "labels and images of any name, counts differ", idx_case(
        MNIST, change=lambda d: write_idx(d / MNIST["train-labels"], np.zeros(299, np.uint8))),
         "300 images but .* has 299 labels", "mine/train-labels-idx1-ubyte"),
    Case("IDX", "--class-names naming too few classes",
         idx_case(MNIST, "mine", "--class-names", "a"),
         "label 1 but only 1 class names .--class-names.", "train-labels-idx1-ubyte"),
    Case("IDX", "--test-data of another image size", test_of_other_size,
         "test images are 5x5 with 1 channel but training images", "b/t10k-images-idx3-ubyte"),
    Case("IDX", "torchvision's raw/ folder holding only labels", lambda w: (
        idx_files(w / "root" / "MNIST" / "raw", without("train-images", "test-images")),
        train_on("root"))[1],
         "no train images .*train-labels-idx1-ubyte .train labels.", "root/MNIST/raw"),
    # CSV variants
    Case("CSV", "gzipped CSV cut short", csv_case(truncated_gzip_csv(), "mine.csv.gz"),
         "corrupt or truncated gzip data", "mine.csv.gz"),
    Case("CSV", "a header of neither a label nor pixel names",
         csv_case(csv_rows(PIXELS, "name," + PIXEL_HEADER.split(",", 1)[1])),
         "names neither a label column first", "mine.csv"),
    Case("CSV", "unlabelled pixels, not a square", csv_case("pixel1,pixel2,pixel3\n1,2,3\n"),
         "3 pixel columns is not a square", "mine.csv"),
    Case("CSV", "a UTF-8 BOM, then a bad byte", csv_case(b"\xef\xbb\xbfpixel1\n\xff\n"),
         "not a text file .byte 10 is not UTF-8.", "mine.csv"),
    Case("CSV", "labelled training CSV, unlabelled test CSV", labelled_train_unlabelled_test,
         "no labels, but train.csv has them", "test.csv"),
    Case("CSV", "--class-names for a CSV without labels", csv_case(UNLABELLED, "mine.csv",
         "--class-names", "a,b"), "--class-names given, but the images carry no labels",
         "mine.csv"),
    # built-in datasets
    Case("builtin", "CIFAR-10 archive with a symlink member", cifar_archive("symlink"),
         "member cifar-10-batches-bin/test_batch.bin is a symbolic link", "c/cifar-10-binary"),
    Case("builtin", "CIFAR-10 archive with a truncated batch", cifar_archive("truncated"),
         "is not a whole number of CIFAR-10 records", "data_batch_1.bin"),
    Case("builtin", "CIFAR-10 archive lacking a batch", cifar_archive("missing"),
         "the archive lacks test_batch.bin", "c/cifar-10-binary.tar.gz"),
    Case("builtin", "CIFAR-10 archive that is not a tar", lambda w: (
        (w / "c").mkdir(), (w / "c" / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8bjunk"),
        train_on("cifar10", "--data-dir", "c"))[2],
         "not a readable tar archive", "c/cifar-10-binary.tar.gz"),
    Case("builtin", "--data-dir lacking the named dataset's files",
         lambda w: ((w / "d").mkdir(), train_on("kmnist", "--data-dir", "d"))[1],
         "lacks train-images-idx3-ubyte.gz", "d"),
]
# fmt: on
