"""NumPy files (.npy, .npz) of images, read without unpickling anything, and images handed over in
memory (arrays, tensors, `(images, labels)`, a torch Dataset) for `vaelab.train(config, data=...)`.

A .npy file holds images only (unlabelled). A .npz file names its arrays: `x_train`, `x_test`
with `y_train`, `y_test` (both splits), or `images` with `labels` (a seeded test split), or the
keys of `DataConfig.array_keys`, or a single array of any name (images); a string array
`class_names` names the classes. The layout of the images is found by
`vaelab.data.layout.channel_major`; uint8, bool and floats in [0, 1] are pixels.

A .npy file and the uncompressed arrays of an .npz file are memory-mapped, not read
(`vaelab.data.npyfile`): their images stay on disk, read a batch at a time. Compressed .npz
arrays are decompressed into memory, bounded by the sizes the zip directory declares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.layout import (
    ImageSet,
    SourceSets,
    channel_major,
    label_tensor,
    note,
    pixel_tensor,
)
from vaelab.data.memory import as_dataset
from vaelab.data.npyfile import read_npy, read_npz
from vaelab.errors import VaelabError

__all__ = ["as_dataset", "load_array_file", "read_npy", "read_npz"]

_NPZ_KEYS = "x_train and x_test (with y_train, y_test), images (with labels), or array_keys"


def load_array_file(path: str | Path, test_path: str | Path | None, config: DataConfig) -> Dataset:
    """A Dataset from a .npy or .npz file (and `test_path`, the test set, when given)."""
    return read_array_file(
        Path(path), None if test_path is None else Path(test_path), config
    ).dataset(config)


def read_array_file(path: Path, test_path: Path | None, config: DataConfig) -> SourceSets:
    """The sets of a .npy or .npz file (and of `test_path`): mapped where the file allows it."""
    keys = config.array_keys
    arrays = _read(path)
    test: ImageSet | None = None
    if test_path is None and _holds_both_splits(arrays, keys):
        train_keys, test_keys = (keys[:2], keys[2:]) if keys else (_DEFAULT_KEYS[1], _TEST_KEYS)
        train = _image_set(path, arrays, train_keys, config, bool(keys))
        test = _image_set(path, arrays, test_keys, config, bool(keys))
        _tell_unread(path, arrays, train_keys + test_keys)
    else:
        train, used = _one_set(path, arrays, keys[:2], "train", config)
        _tell_unread(path, arrays, used)
        if test_path is not None:
            test_arrays = _read(test_path)
            test, used = _one_set(test_path, test_arrays, keys[2:] or keys[:2], "test", config)
            _tell_unread(test_path, test_arrays, used)
    return SourceSets(
        train, test, str(path) if test_path is None else f"{path} (test: {test_path})",
        _suffix(path).lstrip("."), _file_class_names(path, arrays) if config.labels else (),
    )  # fmt: skip


_DEFAULT_KEYS = (("images", "labels"), ("x_train", "y_train"))
_TEST_KEYS = ("x_test", "y_test")


def _holds_both_splits(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> bool:
    return len(keys) == 4 or (not keys and "x_train" in arrays and "x_test" in arrays)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _read(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, or {'': images} for a .npy file."""
    if _suffix(path) == ".npz":
        return read_npz(path)
    if _suffix(path) == ".npy":
        return {"": read_npy(path)}
    raise VaelabError(f"{path}: not a .npy or .npz file")


def _one_set(
    path: Path, arrays: dict[str, np.ndarray], keys: tuple[str, ...], split: str,
    config: DataConfig,
) -> tuple[ImageSet, tuple[str, ...]]:  # fmt: skip
    """The images (and labels) of a file that holds one set, and the names of their arrays."""
    if "" in arrays:  # a .npy file: images only
        return _image_set(path, arrays, ("", ""), config, False), ("",)
    if keys:
        return _image_set(path, arrays, keys, config, True), keys
    for names in (*_DEFAULT_KEYS, (f"x_{split}", f"y_{split}")):
        if names[0] in arrays:
            return _image_set(path, arrays, names, config, False), names
    named = [key for key in arrays if key != "class_names"]
    if len(named) == 1:
        return _image_set(path, arrays, (named[0], ""), config, False), (named[0],)
    raise VaelabError(
        f"{path}: which arrays are the images? vaelab reads {_NPZ_KEYS}; the file holds "
        f"{_listing(arrays)}",
        parameters=("array_keys",),
    )


def _image_set(
    path: Path, arrays: dict[str, np.ndarray], keys: tuple[str, ...], config: DataConfig,
    named: bool,
) -> ImageSet:  # fmt: skip
    """The images of `keys[0]` and the labels of `keys[1]`: required when `named` (by
    array_keys), else read when present."""
    images_key, labels_key = keys
    where = _where(path, images_key)
    array = _array(path, arrays, images_key)
    pixels, alpha = channel_major(pixel_tensor(array, where), where, config.image_size)
    labels = None
    if config.labels and labels_key and (named or labels_key in arrays):
        values = _array(path, arrays, labels_key)
        labels = label_tensor(values, len(pixels), _where(path, labels_key), where)
    mapped = path if isinstance(array, np.memmap) else None
    return ImageSet(pixels, labels, where, alpha, file=mapped)


def _tell_unread(path: Path, arrays: dict[str, np.ndarray], used: tuple[str, ...]) -> None:
    """A note naming the arrays of an .npz file that are not read (`x_val`, ...)."""
    unread = [key for key in arrays if key not in (*used, "class_names")]
    if unread:
        note(
            f"{path}: not read: the array(s) {', '.join(unread[:8])}"
            f"{', ...' if len(unread) > 8 else ''}; vaelab reads {_NPZ_KEYS}"
        )


def _array(path: Path, arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in arrays:
        raise VaelabError(
            f"{path}: no array named {key!r}; the file holds {_listing(arrays)}",
            parameters=("array_keys",),
        )
    return arrays[key]


def _where(path: Path, key: str) -> str:
    return f"{path} ({key})" if key else str(path)


def _listing(arrays: dict[str, np.ndarray]) -> str:
    if not arrays:
        return "no arrays"
    shown = [f"{key} {list(array.shape)}" for key, array in list(arrays.items())[:8]]
    return ", ".join(shown) + (", ..." if len(arrays) > 8 else "")


def _file_class_names(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The names of an .npz's `class_names` array, when it has one."""
    if "class_names" not in arrays:
        return ()
    names = arrays["class_names"]
    where = _where(path, "class_names")
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise VaelabError(f"{where}: expected a 1-D array of strings, got {names.dtype} "
                          f"{list(names.shape)}")  # fmt: skip
    try:
        found = tuple(str(n) if names.dtype.kind == "U" else n.decode("utf-8") for n in names)
    except UnicodeDecodeError:
        raise VaelabError(f"{where}: class names that are not UTF-8 text") from None
    if not all(found) or len(set(found)) != len(found):
        raise VaelabError(f"{where}: class names must be distinct and not empty")
    return found
