"""Data for the tests of Parquet and Arrow sources (tests/test_arrow_source.py): small images,
Hugging Face datasets and plain tables, and the bad inputs vaelab must refuse in one line."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")


def grey(n: int, height: int = 5, width: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width), dtype=np.uint8)


def rgb(n: int, height: int = 5, width: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def chw(images: np.ndarray) -> torch.Tensor:
    """N x H x W (x 3) uint8 images as vaelab holds them, N x C x H x W."""
    tensor = torch.from_numpy(images)
    return tensor[:, None] if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)


def hf(images: np.ndarray, labels: list[int] | None = None, names: tuple[str, ...] = ()) -> object:
    """A Hugging Face Dataset of `images` (an Image column) and `labels` (a ClassLabel of
    `names`, or plain integers without names)."""
    features = {"image": datasets.Image()}
    columns: dict[str, list] = {"image": [Image.fromarray(image) for image in images]}
    if labels is not None:
        features["label"] = (
            datasets.ClassLabel(names=list(names)) if names else datasets.Value("int64")
        )
        columns["label"] = labels
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def table(path: Path, row_group_size: int | None = None, **columns: object) -> Path:
    """A Parquet or Arrow (IPC stream) file of plain columns, without Hugging Face metadata."""
    data = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(data, path, row_group_size=row_group_size)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data, max_chunksize=row_group_size)
    return path


# ---------------------------------------------------------------- bad input


REFUSED: dict[str, tuple[Callable[..., list[str]], str]] = {}


def refused(expect: str) -> Callable[[Callable[..., list[str]]], Callable[..., list[str]]]:
    """Register a bad-input case: it builds its files and returns the source's arguments;
    `expect` is a regex of the one line vaelab prints (after "vaelab: error: ")."""

    def register(build: Callable[..., list[str]]) -> Callable[..., list[str]]:
        REFUSED[build.__name__] = (build, expect)
        return build

    return register


def _state(folder: Path, files: object) -> None:
    hf(grey(2)).save_to_disk(folder)
    (folder / "state.json").write_text(json.dumps({"_data_files": files}))


@refused(r"^d\.parquet: not a readable Parquet file \(")
def corrupt(work: Path) -> list[str]:
    (work / "d.parquet").write_bytes(b"PAR1" + bytes(range(200)))
    return ["d.parquet"]


@refused(r"^s/data-00000-of-00001\.arrow: not a readable Arrow")
def truncated_arrow(work: Path) -> list[str]:
    hf(grey(30)).save_to_disk(work / "s")
    data = next((work / "s").glob("*.arrow"))
    data.write_bytes(data.read_bytes()[:700])
    return ["s"]


@refused(
    r"^d\.parquet: no column of encoded images \(binary, or the struct .*; it holds "
    r"x \(int64\), name \(string\); name the image column with --columns$"
)
def no_image_column(work: Path) -> list[str]:
    table(work / "d.parquet", x=[1, 2, 3], name=["a", "b", "c"])
    return ["d.parquet"]


@refused(r"^d\.parquet: no column named 'picture'; it holds image \(")
def missing_named_column(work: Path) -> list[str]:
    hf(grey(3)).to_parquet(work / "d.parquet")
    return ["d.parquet", "--columns", "picture"]


@refused(r"^d\.parquet row 71: not an image Pillow can read")
def undecodable(work: Path) -> list[str]:
    images = [png(image) for image in grey(100)]
    images[71] = b"\x89PNG not quite"
    table(work / "d.parquet", row_group_size=30, image=images)
    return ["d.parquet"]


@refused(r"^d\.parquet row 1: no image \(null\)$")
def null_image(work: Path) -> list[str]:
    table(work / "d.parquet", image=pa.array([png(grey(1)[0]), None], pa.binary()))
    return ["d.parquet"]


@refused(r"^d\.parquet row 0: the image is a path \(.*a\.png\) without its bytes")
def path_only(work: Path) -> list[str]:
    Image.fromarray(grey(1)[0]).save(work / "a.png")
    dataset = datasets.Dataset.from_dict({"image": [str(work / "a.png")]})
    dataset.cast_column("image", datasets.Image()).to_parquet(work / "d.parquet")
    return ["d.parquet"]


@refused(
    r"^d\.parquet: column label holds string, not integer class indices; name "
    r"another with --columns, or ignore the labels"
)
def string_labels(work: Path) -> list[str]:
    table(work / "d.parquet", image=[png(i) for i in grey(2)], label=["cat", "dog"])
    return ["d.parquet"]


@refused(r"^d\.parquet row 1: label -1 \(datasets' mark of a missing label\)")
def missing_label(work: Path) -> list[str]:
    hf(grey(4), [0, -1, 1, 0], ("a", "b")).to_parquet(work / "d.parquet")
    return ["d.parquet"]


@refused(
    r"^d\.parquet row 1: a RGB image, but the first \(d\.parquet row 0\) is "
    r"greyscale; convert them"
)
def grey_and_rgb(work: Path) -> list[str]:
    table(work / "d.parquet", image=[png(grey(1)[0]), png(rgb(1)[0])])
    return ["d.parquet"]


@refused(r"^d\.parquet: no rows, so no images$")
def empty(work: Path) -> list[str]:
    table(work / "d.parquet", image=pa.array([], pa.binary()))
    return ["d.parquet"]


@refused(r"^hub/extra\.parquet: names no split")
def unnamed_among_named(work: Path) -> list[str]:
    for name in ("train-0", "test-0", "extra"):
        table(work / "hub" / f"{name}.parquet", image=[png(grey(1)[0])])
    return ["hub"]


@refused(r"^hub/test-0\.parquet: the classes of label \(b, a\) are not those")
def other_classes_in_test(work: Path) -> list[str]:
    hf(grey(2), [0, 1], ("a", "b")).to_parquet(work / "hub/train-0.parquet")
    hf(grey(2), [0, 1], ("b", "a")).to_parquet(work / "hub/test-0.parquet")
    return ["hub"]


@refused(r"^s/state\.json: expected _data_files")
def bad_state(work: Path) -> list[str]:
    _state(work / "s", "data.arrow")
    return ["s"]


@refused(r"^s/state\.json: expected _data_files")
def state_outside(work: Path) -> list[str]:
    _state(work / "s", [{"filename": "../elsewhere.arrow"}])
    return ["s"]


@refused(r"^s/state\.json: lists data-00001-of-00002\.arrow, which is not in s$")
def state_missing_file(work: Path) -> list[str]:
    _state(work / "s", [{"filename": "data-00001-of-00002.arrow"}])
    return ["s"]


@refused(r"^d/dataset_dict\.json: not valid JSON")
def bad_dict(work: Path) -> list[str]:
    datasets.DatasetDict({"train": hf(grey(2))}).save_to_disk(work / "d")
    (work / "d" / "dataset_dict.json").write_text('{"splits": "train"')
    return ["d"]


@refused(
    r"^d\.parquet: row group 0 of the columns read \(20\.3 KiB\) is more than "
    r"the 2\.0 KiB \(2000 bytes\)"
)
def group_over_limit(work: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    table(work / "d.parquet", image=[png(i) for i in grey(40, 20, 20)])
    monkeypatch.setenv("VAELAB_MAX_READ_BYTES", "2000")
    return ["d.parquet"]


@refused(r"this needs pyarrow, which is not installed: pip install 'vaelab\[arrow\]'$")
def without_pyarrow(work: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hf(grey(2)).to_parquet(work / "d.parquet")
    for name in [n for n in sys.modules if n == "pyarrow" or n.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    return ["d.parquet"]
