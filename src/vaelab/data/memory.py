"""Images handed over in memory, for `vaelab.train(config, data=...)`: a Dataset, a NumPy array
or torch tensor of images (any layout of `vaelab.data.layout.channel_major`), a tuple
`(images, labels)`, a `torch.utils.data.Dataset` of images or `(image, label)` pairs, or a path.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._io import FILE_LIMIT, over_limit, read_limit, size_words
from vaelab.config import DataConfig
from vaelab.data.dataset import Dataset
from vaelab.data.layout import ImageSet, build_dataset, channel_major, label_tensor
from vaelab.data.layout import pixel_tensor as _pixel_tensor
from vaelab.errors import VaelabError

_KINDS = (
    "a vaelab Dataset, a NumPy array or torch tensor of images, a tuple (images, labels), a "
    "torch.utils.data.Dataset, or a path"
)


def as_dataset(data: Any, config: DataConfig | None = None, test_data: Any = None) -> Dataset:
    """`data` (and `test_data`, the test set) as a vaelab Dataset.

    `data` may be a vaelab `Dataset` (returned as it is), a NumPy array or torch tensor of images
    (N x D, N x H x W, N x H x W x C or N x C x H x W), a tuple `(images, labels)`, a
    `torch.utils.data.Dataset` whose items are images or `(image, label)` pairs, or a path
    (`str` or `Path`: read as `DataConfig.source` is). Without `test_data`, `config.test_split`
    of the images are held out as the test set (seeded by `config.split_seed`, order kept).
    """
    config = config or DataConfig()
    if isinstance(data, Dataset):
        if test_data is not None:
            raise VaelabError(
                "a vaelab Dataset holds its own test split; drop test_data",
                parameters=("test_data",),
            )
        return data
    if isinstance(data, (str, Path)):
        return _from_paths(data, test_data, config)
    train = image_set(data, "data", config)
    test = None if test_data is None else image_set(test_data, "test_data", config)
    return build_dataset(train, test, config, source=_describe(data, train), format="arrays")


def _from_paths(data: str | Path, test_data: Any, config: DataConfig) -> Dataset:
    from vaelab.data.sources import load_source  # it reads arrays with this package

    if test_data is not None and not isinstance(test_data, (str, Path)):
        raise VaelabError(
            "data is a path, so test_data must be one too", parameters=("data", "test_data")
        )
    test = None if test_data is None else str(test_data)
    return load_source(replace(config, source=str(data), test_source=test))


def image_set(data: Any, name: str, config: DataConfig) -> ImageSet:
    """One split handed over in memory: images, `(images, labels)` or a torch Dataset."""
    labels: Any = None
    size = config.image_size
    if isinstance(data, tuple):
        if len(data) != 2:
            raise VaelabError(
                f"{name}: a tuple must be (images, labels), got {len(data)} items",
                parameters=(name,),
            )
        data, labels = data
    elif _is_torch_dataset(data):
        data, labels, known = stack_items(data, name)
        size = config.image_size or known
    if _is_hugging_face(data):
        raise VaelabError(
            f"{name}: a Hugging Face {type(data).__name__}; save it with its "
            "save_to_disk(folder) and give that folder (a path): vaelab reads what it saves",
            parameters=(name,),
        )
    if not isinstance(data, (np.ndarray, torch.Tensor)):
        raise VaelabError(
            f"{name}: {type(data).__name__} is not images; give {_KINDS}", parameters=(name,)
        )
    pixels, alpha = channel_major(_pixel_tensor(data, name), name, size)
    if labels is not None and config.labels:
        labels = label_tensor(labels, len(pixels), f"{name} labels", name)
    return ImageSet(pixels, labels if config.labels else None, name, alpha, file=_mapped_file(data))


def _mapped_file(data: np.ndarray | torch.Tensor) -> Path | None:
    """The file a memory-mapped array reads (it stays mapped), else None."""
    filename = getattr(data, "filename", None) if isinstance(data, np.memmap) else None
    return Path(filename) if filename else None


def _is_hugging_face(data: Any) -> bool:
    """A Hugging Face `datasets` Dataset or DatasetDict (the module is not imported)."""
    return type(data).__module__.startswith("datasets.") and hasattr(data, "save_to_disk")


def _is_torch_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor)


def stack_items(data: Any, name: str) -> tuple[np.ndarray | torch.Tensor, Any, tuple[int, ...]]:
    """The items of a map-style torch Dataset stacked: (images, labels or None, (H, W) when
    the items are PIL images, whose layout is known). The first item bounds the whole: len x its
    size must stay within the read limit."""
    try:
        count = len(data)
    except TypeError:
        raise VaelabError(
            f"{name}: a torch Dataset without a length (an IterableDataset?); give one with "
            "__len__ and __getitem__, or the images as an array",
            parameters=(name,),
        ) from None
    if count < 1:
        raise VaelabError(f"{name}: the torch Dataset holds no items", parameters=(name,))
    first = _split_item(data[0], name, 0)
    per_item = _nbytes(first[0])
    most = read_limit(FILE_LIMIT)
    if count * per_item > most:
        raise VaelabError(
            f"{name}: {count:,} items of {size_words(per_item)} are {over_limit(most)}",
            parameters=(name,),
        )
    items = [first] + [_split_item(data[i], name, i) for i in range(1, count)]
    images = [_image_array(image, name, i) for i, (image, _) in enumerate(items)]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        odd = next(i for i, image in enumerate(images) if tuple(image.shape) != images[0].shape)
        raise VaelabError(
            f"{name}: item {odd} is an image of shape {list(images[odd].shape)}, item 0 of "
            f"{list(images[0].shape)}; all must have one shape",
            parameters=(name,),
        )
    stacked: np.ndarray | torch.Tensor
    if all(isinstance(image, torch.Tensor) for image in images):
        stacked = torch.stack(images)  # type: ignore[arg-type]
    else:
        stacked = np.stack([np.asarray(image) for image in images])
    labelled = [label is not None for _, label in items]
    if any(labelled) and not all(labelled):
        raise VaelabError(f"{name}: some items have labels, some not", parameters=(name,))
    labels = [int(label) for _, label in items] if all(labelled) else None
    known = (
        tuple(images[0].shape[1:])
        if not isinstance(items[0][0], (np.ndarray, torch.Tensor))
        else ()
    )
    return stacked, None if labels is None else np.asarray(labels, dtype=np.int64), known


def _split_item(item: Any, name: str, index: int) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise VaelabError(
                f"{name}: item {index} has {len(item)} parts; items must be an image or "
                "(image, label)",
                parameters=(name,),
            )
        image, label = item
        if not _is_integer(label):
            raise VaelabError(
                f"{name}: item {index}'s label {str(label)[:40]!r} is not an integer class index",
                parameters=(name,),
            )
        return image, label
    return item, None


def _is_integer(label: Any) -> bool:
    if isinstance(label, bool):
        return False
    if isinstance(label, (int, np.integer)):
        return True
    if isinstance(label, (torch.Tensor, np.ndarray)) and label.ndim == 0:
        value = torch.as_tensor(label)
        return not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return False


def _image_array(image: Any, name: str, index: int) -> np.ndarray | torch.Tensor:
    """An item's image as an array: a tensor or array as it is, a PIL image as H x W (x C)."""
    if isinstance(image, (torch.Tensor, np.ndarray)):
        return image
    if type(image).__module__.startswith("PIL."):
        from vaelab.data.imagefile import pil_pixels

        return pil_pixels(image, f"{name} item {index}")
    raise VaelabError(
        f"{name}: item {index} is a {type(image).__name__}, not an image (a tensor, an array or "
        "a PIL image)",
        parameters=(name,),
    )


def _nbytes(image: Any) -> int:
    if isinstance(image, torch.Tensor):
        return image.numel() * image.element_size()
    if isinstance(image, np.ndarray):
        return int(image.nbytes)
    size = getattr(image, "size", (1, 1))
    return int(size[0]) * int(size[1]) * 3 if isinstance(size, tuple) else 1


def _describe(data: Any, train: ImageSet) -> str:
    """A few words on what was handed over, as a Dataset's source."""
    channels, height, width = train.shape
    kind = "tensor" if isinstance(data, torch.Tensor) else type(data).__name__
    if isinstance(data, tuple):
        kind = "(images, labels)"
    return f"in-memory {kind}: {len(train.pixels)} images of {height}x{width}x{channels}"
