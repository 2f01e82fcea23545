"""Bad-input cases of the image folder and NumPy sources (see tests/bad_input_cases.py)."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tests.bad_input_cases import RUN, SMALL, Case, _Bomb
from tests.helpers import write_csv


def train_on(data: str, *options: str, test: str | None = None) -> list[str]:
    """`vaelab train` on `data` (and `test`, the test data, when given) with `options`."""
    held = ["--test-data", test] if test else []
    return ["train", *SMALL, "--data", data, *held, *options, *RUN]


def grey(n: int, height: int = 6, width: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width), dtype=np.uint8)


def pngs(folder: Path, images: np.ndarray, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{start + i:03d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    return paths


def folder(change: Callable[[Path], None], *options: str) -> Callable[[Path], list[str]]:
    """imgs/: 100 grey 6x6 PNGs in two class folders, where `change` spoils one thing."""

    def build(work: Path) -> list[str]:
        pngs(work / "imgs" / "a", grey(50, seed=1))
        pngs(work / "imgs" / "b", grey(50, seed=2), start=50)
        change(work / "imgs")
        return train_on("imgs", *options)

    return build


def frames(suffix: str) -> Callable[[Path], None]:
    """b/099 replaced by an image of 3 frames (an animated PNG or GIF, a multi-page TIFF)."""

    def change(root: Path) -> None:
        (root / "b" / "099.png").unlink()
        first, *others = (Image.fromarray(image) for image in grey(3, seed=3))
        first.save(root / "b" / f"099{suffix}", save_all=True, append_images=others)

    return change


def other_size(root: Path) -> None:
    Image.fromarray(grey(1, 8, 7)[0]).save(root / "b" / "099.png")


def one_rgb(root: Path) -> None:
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "b" / "099.png")


def truncated(root: Path) -> None:
    path = root / "a" / "003.png"
    path.write_bytes(path.read_bytes()[:60])


def emptied(root: Path) -> None:
    for path in (root / "b").iterdir():
        path.unlink()


def float_tiff(root: Path) -> None:
    Image.fromarray(np.zeros((6, 6), np.float32)).save(root / "a" / "007.tif")


def npy(array_or_bytes: np.ndarray | bytes, name: str = "x.npy") -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        if isinstance(array_or_bytes, bytes):
            (work / name).write_bytes(array_or_bytes)
        else:
            np.save(work / name, array_or_bytes)
        return train_on(name)

    return build


def npz(*options: str, **arrays: np.ndarray) -> Callable[[Path], list[str]]:
    def build(work: Path) -> list[str]:
        np.savez(work / "d.npz", **arrays)
        return train_on("d.npz", *options)

    return build


def npz_member_twice(work: Path) -> list[str]:
    """d.npz holding images.npy twice (a zip allows it; NumPy would read one of them)."""
    with zipfile.ZipFile(work / "d.npz", "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name": the point
        for images in (grey(100), grey(50)):
            member = io.BytesIO()
            np.save(member, images)
            archive.writestr("images.npy", member.getvalue())
    return train_on("d.npz")


def object_npy(work: Path) -> list[str]:
    """An .npy file whose object array would run code when unpickled."""
    np.save(work / "x.npy", np.array([_Bomb(), 1], dtype=object), allow_pickle=True)
    return train_on("x.npy")


def pickle_as_npy(work: Path) -> list[str]:
    (work / "x.npy").write_bytes(pickle.dumps({"w": _Bomb()}))
    return train_on("x.npy")


def truncated_npy(work: Path) -> list[str]:
    np.save(work / "x.npy", grey(100))
    raw = (work / "x.npy").read_bytes()
    (work / "x.npy").write_bytes(raw[: len(raw) // 2])
    return train_on("x.npy")


def corrupt_npz(work: Path) -> list[str]:
    np.savez_compressed(work / "d.npz", images=grey(100))
    raw = bytearray((work / "d.npz").read_bytes())
    for i in range(60, 90):
        raw[i] ^= 0xFF
    (work / "d.npz").write_bytes(bytes(raw))
    return train_on("d.npz")


def mixed_kinds(work: Path) -> list[str]:
    np.save(work / "x.npy", grey(100))
    pngs(work / "imgs", grey(10))
    return train_on("x.npy", test="imgs")


def npz_past_declared(work: Path) -> list[str]:
    """A compressed member whose stream holds 100 bytes more than the zip directory declares
    (its size and CRC are those of the array alone, so zipfile stops there without a word)."""
    array = io.BytesIO()
    np.save(array, grey(100))
    raw = array.getvalue()
    with zipfile.ZipFile(work / "d.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", raw + bytes(100))
    packed = bytearray((work / "d.npz").read_bytes())
    for old, new in (
        (zlib.crc32(raw + bytes(100)), zlib.crc32(raw)), (len(raw) + 100, len(raw)),
    ):  # fmt: skip
        packed = bytearray(packed.replace(struct.pack("<I", old), struct.pack("<I", new)))
    (work / "d.npz").write_bytes(bytes(packed))
    return train_on("d.npz")


def csv_file(work: Path, *options: str) -> list[str]:
    """data.csv: 100 labelled 6x6 images in the tutorial's layout."""
    images = grey(100)
    write_csv(work / "data.csv", images.reshape(100, -1), np.arange(100) % 2)
    return train_on("data.csv", *options)


NAN = (grey(100) / 255.0).astype(np.float32)
NAN[3, 2, 1] = np.nan
SIDES = 3 * np.ones((100, 3, 4, 3), np.uint8)  # channels first (4x3) or last (3x4)?

# fmt: off
CASES: list[Case] = [
    # image folders
    Case("folder", "images of two sizes", folder(other_size),
         r"images of 2 sizes .H x W.: 6x6 \(99, e.g. .*\), 8x7 \(1, e.g. .*099.png\); give "
         "--image-size", "imgs"),
    Case("folder", "greyscale and colour images mixed", folder(one_rgb),
         r"both greyscale and colour images: grey \(99, .*\), RGB \(1, e.g. .*099.png\)", "imgs"),
    Case("folder", "empty folder", lambda w: ((w / "empty").mkdir(), train_on("empty"))[1],
         "empty folder, no images", "empty"),
    Case("folder", "a class folder without images", folder(emptied),
         "class folder holds no images", "imgs/b"),
    Case("folder", "no images, only other files", lambda w: (
        (w / "docs").mkdir(), (w / "docs" / "notes.txt").write_text("hi"), train_on("docs"))[2],
         r"no images .* notes.txt; vaelab reads image folders, .npy", "docs"),
    Case("folder", "images beside class folders",
         folder(lambda root: pngs(root, grey(1))),
         "holds both images .000.png. and subfolders .a/.", "imgs"),
    Case("folder", "truncated PNG", folder(truncated),
         r"cannot decode the image \(image file is truncated", "imgs/a/003.png"),
    Case("folder", "a text file named .png", folder(
        lambda root: (root / "a" / "010.png").write_text("not an image")),
         "not an image Pillow can read", "imgs/a/010.png"),
    Case("folder", "a broken link named like an image (refused, not skipped)",
         folder(lambda root: (root / "a" / "zz.png").symlink_to(root / "gone.png")),
         "file not found", "imgs/a/zz.png"),
    Case("folder", "32-bit float TIFF", folder(float_tiff),
         "pixels of mode F .32-bit integer or float", "imgs/a/007.tif"),
    Case("folder", "a test class the training set lacks", lambda w: (
        pngs(w / "imgs" / "a", grey(100)), pngs(w / "held" / "z", grey(5)),
        train_on("imgs", test="held"))[2],
         r"class folder z/ is not among the training classes \(a\)", "held"),
    Case("folder", "an animated PNG (3 frames)", folder(frames(".png")),
         r"imgs/b/099.png: holds 3 frames \(an animation or a multi-page file\), and vaelab reads "
         "one image per file", "imgs/b/099.png"),
    Case("folder", "a TIFF of 3 pages", folder(frames(".tiff")),
         "imgs/b/099.tiff: holds 3 frames", "imgs/b/099.tiff"),
    Case("folder", "--image-size past what Pillow decodes in one image",
         folder(lambda root: None, "--image-size", "100000x100000"),
         "image.size 100000x100000 is 10,000,000,000 pixels per image, more than the "
         "89,478,485 Pillow decodes in one image", "imgs"),
    Case("folder", "--image-size in digits that are not ASCII",
         folder(lambda root: None, "--image-size", "\u0663x3"),
         "expected HEIGHTxWIDTH in pixels", "--image-size"),
    Case("CSV", "--image-size for a CSV file, whose images are not resized",
         lambda w: csv_file(w, "--image-size", "8x8"),
         "images are 6x6, --image-size says 8x8; only the images of folders and of Parquet or "
         "Arrow files are resized", "data.csv"),
    Case("CSV", "--columns for a CSV file, which has no such columns",
         lambda w: csv_file(w, "--columns", "image,label"),
         r"data.csv: --columns names the image and label fields of Parquet or Arrow tables, and "
         "this is CSV, read without it; drop --columns$", "data.csv"),
    Case("CSV", "--npz-keys for a CSV file", lambda w: csv_file(w, "--npz-keys", "a,b"),
         "data.csv: --npz-keys names the arrays of a NumPy file, and this is CSV", "data.csv"),
    Case("built-in", "--npz-keys for a built-in dataset",
         lambda w: ["train", *SMALL, "--data", "mnist", "--npz-keys", "a,b", *RUN],
         "mnist: --npz-keys names the arrays of a NumPy file, and this is a built-in dataset",
         "--npz-keys"),
    Case("built-in", "--image-size other than the dataset's own",
         lambda w: ["train", *SMALL, "--image-size", "32x32", *RUN],
         "fashion-mnist: images are 28x28, --image-size says 32x32; built-in datasets are not "
         "resized", "--image-size"),
    Case("folder", "test folder without class folders", lambda w: (
        pngs(w / "imgs" / "a", grey(100)), pngs(w / "held", grey(5)),
        train_on("imgs", test="held"))[2],
         "holds its images directly, but .* has class folders", "held"),
    # .npy
    Case("npy", "object array that runs code when unpickled", object_npy,
         r"holds Python objects \(a pickle\); vaelab does not unpickle", "x.npy"),
    Case("npy", "a pickle renamed .npy", pickle_as_npy,
         "holds Python objects", "x.npy"),
    Case("npy", "truncated .npy", truncated_npy, r"truncated: its header declares \[100, 6, 6\]",
         "x.npy"),
    Case("npy", "not an .npy file at all", npy(b"hello, world\n"),
         "not a valid .npy array", "x.npy"),
    Case("npy", "floats outside [0, 1]", npy(grey(100).astype(np.float32)),
         r"pixel values must lie in \[0, 1\], found min .* and max 255; 0-255 values\?", "x.npy"),
    Case("npy", "NaN pixels", npy(NAN), "pixels hold NaN or infinite values", "x.npy"),
    Case("npy", "int64 pixels", npy(grey(100).astype(np.int64)),
         "pixels of type int64 are not intensities", "x.npy"),
    Case("npy", "ambiguous channel axis", npy(SIDES),
         r"images of shape 100x3x4x3 are ambiguous .*; give --image-size", "x.npy"),
    Case("npy", "two channels", npy(np.zeros((100, 6, 6, 2), np.uint8)),
         "no channel axis of 1, 3 or 4", "x.npy"),
    Case("npy", "images of 5 dimensions", npy(np.zeros((100, 2, 6, 6, 3), np.uint8)),
         r"images of shape \[100, 2, 6, 6, 3\]", "x.npy"),
    Case("npy", "flat images that are not square", npy(np.zeros((100, 30), np.uint8)),
         "images of 30 values each are not square; give --image-size", "x.npy"),
    Case("npy", "train and test of different kinds", mixed_kinds,
         "the test set is an image folder, the training set .* a NumPy file", "imgs"),
    # .npz
    Case("npz", "arrays that are not the keys vaelab reads", npz(a=grey(100), b=grey(100)),
         r"which arrays are the images\? .* the file holds a \[100, 6, 6\], b", "d.npz"),
    Case("npz", "--npz-keys naming a missing array",
         npz("--npz-keys", "pix,lab", pix=grey(100), labels=np.zeros(100, int)),
         "no array named 'lab'", "d.npz"),
    Case("npz", "labels of the wrong length", npz(images=grey(100), labels=np.zeros(99, int)),
         r"99 labels for 100 images", "d.npz (labels)"),
    Case("npz", "float labels", npz(images=grey(100), labels=np.zeros(100)),
         "labels must be integer class indices, got float64", "d.npz (labels)"),
    Case("npz", "negative labels", npz(images=grey(100), labels=-np.ones(100, int)),
         "labels must be class indices 0, 1, ...", "d.npz (labels)"),
    Case("npz", "labels for the training split only",
         npz(x_train=grey(100), y_train=np.zeros(100, int), x_test=grey(20)),
         "no labels, but .* has them", "d.npz (x_test)"),
    Case("npz", "train and test images of different sizes",
         npz(x_train=grey(100), x_test=grey(20, 5, 5)),
         "test images are 5x5 with 1 channel but training images .* are 6x6", "d.npz (x_test)"),
    Case("npz", "NaN in x_train", npz(x_train=NAN, x_test=NAN[:10]),
         "pixels hold NaN", "d.npz (x_train)"),
    Case("npz", "an array stored twice under one name", npz_member_twice,
         r"d.npz: holds the array 'images' twice \(member 'images.npy' again\); not a file NumPy "
         "wrote", "d.npz"),
    Case("npz", "corrupt zip", corrupt_npz, "(not a valid|corrupt) .npz file", "d.npz"),
    Case("npz", "a compressed array with data past its declared size", npz_past_declared,
         "data past the 3728 bytes the zip directory declares for it", "d.npz (images)"),
    Case("npz", "object array inside an .npz", lambda w: (
        np.savez(w / "d.npz", images=np.array([_Bomb()], dtype=object)), train_on("d.npz"))[1],
         "holds Python objects", "d.npz (images)"),
    Case("npz", "class_names that are not strings",
         npz(images=grey(100), labels=np.zeros(100, int), class_names=np.arange(3)),
         "expected a 1-D array of strings", "d.npz (class_names)"),
]
# fmt: on
