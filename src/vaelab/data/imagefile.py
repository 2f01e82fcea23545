"""Image files decoded through Pillow into uint8 arrays, one file at a time or many in a pool of
processes (see `vaelab.data.folder` for the rules: modes, alpha, resizing, bounds).

Decoding a small PNG is mostly Python work inside Pillow (about 75 us for a 28x28 image), so
threads do not overlap it; processes do: 60,000 Fashion-MNIST PNGs take 5.6 s in one process and
2.9 s in two on a 2-core machine (`python benchmarks/bench_read.py`).
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaelab._io import FILE_LIMIT, read_bytes, read_limit, size_words, too_large
from vaelab._resources import require_disk, require_memory
from vaelab.data.layout import note
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from PIL import Image as PILImage

PARALLEL_FROM = 4000  # images: below this, starting a pool costs more than it saves
_CHUNK = 2000  # images per task of the pool
_CHUNK_BYTES = 64 << 20  # at most this much of resized RGB images per task
_TO_RGB = ("P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
Size = tuple[int, ...] | None  # (H, W) to resize to, or None
Decoded = tuple[list[np.ndarray], list[int]]  # C x H x W arrays, indices of those with alpha


def default_workers(count: int) -> int:
    """Processes to decode `count` images with: the CPUs (up to 8) from PARALLEL_FROM images on
    Linux, where a pool forks cheaply; else 1."""
    if count < PARALLEL_FROM or not sys.platform.startswith("linux"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def check_resized(count: int, size: Size, root: Path | str, out: Path | None) -> None:
    """Refuse in one line, before anything is decoded, `count` images resized to `size` (H, W)
    that cannot be held: more pixels per image than Pillow decodes in one image, or more bytes in
    all (count x H x W at one channel; RGB triples it) than the disk that holds `out`, or, in
    memory, than the read limit or the free memory."""
    if size is None:
        return
    from PIL import Image

    height, width = size
    most = Image.MAX_IMAGE_PIXELS
    if most is not None and height * width > most:
        raise VaelabError(
            f"{root}: image_size {height}x{width} is {height * width:,} pixels per image, more "
            f"than the {most:,} Pillow decodes in one image",
            parameters=("image_size",),
        )
    needed = count * height * width
    resizing = f"resizing {count:,} images to {height}x{width}"
    if out is not None:
        require_disk(out.parent, needed, f"{root}: {resizing}")
        return
    limit = read_limit(FILE_LIMIT)
    if needed > limit:
        raise too_large(root, f"{resizing} ({size_words(needed)})", limit)
    require_memory(needed, f"{root}: {resizing}")


def decode_all(
    files: tuple[Path, ...],
    root: Path,
    size: Size,
    workers: int | None = None,
    out: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """All `files` decoded, as one uint8 N x C x H x W tensor: one size and channel count, or
    one line naming what differs. `workers` > 1 decodes in that many processes (default:
    `default_workers`); a pool that cannot start or breaks is replaced by one process.

    Without `out` the images are held in memory, up to the read limit. With `out` they are
    written into that .npy file chunk by chunk as they are decoded (the disk must hold them) and
    the tensor maps it. `progress` is told the images of each chunk done. Images resized to
    `size` are decoded in chunks of at most 64 MiB, so that memory holds a chunk, not the set."""
    workers = default_workers(len(files)) if workers is None else workers
    step = _CHUNK if size is None else max(1, min(_CHUNK, _CHUNK_BYTES // (3 * size[0] * size[1])))
    chunks = [files[i : i + step] for i in range(0, len(files), step)]
    sink: _Sink = _Written(root, len(files), out) if out is not None else _Collected(root)
    if workers > 1 and len(chunks) > 1:
        try:
            _decode_pooled(chunks, size, min(workers, len(chunks)), sink.budget, sink.add, progress)
        except (BrokenProcessPool, OSError, AssertionError):  # no pool here (or a daemon)
            workers = 1
            sink = _Written(root, len(files), out) if out is not None else _Collected(root)
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            sink.add(chunk, decode_chunk(chunk, size, sink.left))
            if progress is not None:
                progress(len(chunk))
    return sink.finish(files)


class _Sink:
    """Where decoded images go, chunk by chunk, and the files that had an alpha channel."""

    budget: int

    def __init__(self, root: Path) -> None:
        self.root = root
        self.alpha: list[Path] = []

    @property
    def left(self) -> int:
        """Bytes the next chunk may decode to."""
        return self.budget

    def add(self, chunk: tuple[Path, ...], decoded: Decoded) -> None:
        arrays, alpha = decoded
        self.alpha.extend(chunk[i] for i in alpha)
        self.keep(chunk, arrays)

    def keep(self, chunk: tuple[Path, ...], arrays: list[np.ndarray]) -> None:
        raise NotImplementedError

    def finish(self, files: tuple[Path, ...]) -> torch.Tensor:
        """The images, after saying which had an alpha channel."""
        if self.alpha:
            note(
                f"{self.root}: {len(self.alpha)} image(s) have an alpha channel (e.g. "
                f"{self.alpha[0]}); it is dropped"
            )
        return self.images(files)

    def images(self, files: tuple[Path, ...]) -> torch.Tensor:
        raise NotImplementedError


class _Collected(_Sink):
    """The decoded arrays so far, held in memory under the read limit."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.budget = read_limit(FILE_LIMIT)
        self.total = 0
        self.arrays: list[np.ndarray] = []

    @property
    def left(self) -> int:
        return self.budget - self.total

    def keep(self, chunk: tuple[Path, ...], arrays: list[np.ndarray]) -> None:
        self.total += sum(array.nbytes for array in arrays)
        if self.total > self.budget:
            raise too_large(
                self.root, f"the images decoded so far ({size_words(self.total)})", self.budget
            )
        self.arrays.extend(arrays)

    def images(self, files: tuple[Path, ...]) -> torch.Tensor:
        check_alike(files, self.arrays, self.root)
        if not self.arrays:
            return torch.zeros((0, 1, 1, 1), dtype=torch.uint8)
        return torch.from_numpy(np.stack(self.arrays))


class _Written(_Sink):
    """The decoded images written into an .npy file, sized by the first chunk: each image on
    disk as soon as its chunk is decoded, none held in memory."""

    def __init__(self, root: Path, count: int, out: Path) -> None:
        super().__init__(root)
        self.budget = read_limit(FILE_LIMIT)  # a chunk's bound in memory; the whole goes to disk
        self.count, self.out, self.done = count, out, 0
        self.shapes: list[tuple[int, ...]] = []
        self.array: np.memmap | None = None

    def keep(self, chunk: tuple[Path, ...], arrays: list[np.ndarray]) -> None:
        if self.array is None and arrays:
            self.array = open_npy(self.out, (self.count, *arrays[0].shape), self.root)
        self.shapes += [array.shape for array in arrays]
        if self.array is not None and all(a.shape == self.array.shape[1:] for a in arrays):
            self.array[self.done : self.done + len(arrays)] = np.stack(arrays)
        self.done += len(arrays)  # images of another shape are told apart when all are read

    def images(self, files: tuple[Path, ...]) -> torch.Tensor:
        check_shapes(files, self.shapes, self.root)
        if self.array is None:
            return torch.zeros((0, 1, 1, 1), dtype=torch.uint8)
        self.array.flush()
        return torch.from_numpy(self.array)


def open_npy(path: Path, shape: tuple[int, ...], root: Path) -> np.memmap:
    """A new uint8 .npy file of `shape` at `path`, mapped for writing; refused in one line when
    the disk cannot hold it."""
    from vaelab._resources import require_disk

    require_disk(path.parent, math.prod(shape), f"{root}: preparing {shape[0]:,} images")
    try:
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as exc:
        raise VaelabError(f"{path}: could not write ({exc.strerror or exc})") from None


def _decode_pooled(
    chunks: list[tuple[Path, ...]], size: Size, workers: int, budget: int,
    add: Callable[[tuple[Path, ...], Decoded], None],
    progress: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_decode_in_worker, chunk, size, budget) for chunk in chunks]
        try:
            for chunk, future in zip(chunks, futures):
                result = future.result()
                if isinstance(result, str):
                    raise VaelabError(result)
                stacked, alpha = result
                add(chunk, (list(stacked), alpha))
                if progress is not None:
                    progress(len(chunk))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _decode_in_worker(
    files: tuple[Path, ...], size: Size, budget: int
) -> tuple[np.ndarray | list[np.ndarray], list[int]] | str:
    """`decode_chunk` in a worker process: an error comes back as its message, a string."""
    try:
        arrays, alpha = decode_chunk(files, size, budget)
    except VaelabError as error:
        return str(error)
    if len({array.shape for array in arrays}) == 1:
        return np.stack(arrays), alpha  # one buffer crosses the pipe, not one per image
    return arrays, alpha


def decode_chunk(files: tuple[Path, ...], size: Size, budget: int) -> Decoded:
    """Decode `files` (C x H x W uint8 each, at most `budget` bytes in all) and say which had
    an alpha channel (their indices)."""
    arrays, alpha, total = [], [], 0
    with strict_decoding():
        for i, path in enumerate(files):
            array, had_alpha = decode_image(path, size, budget - total)
            total += array.nbytes
            arrays.append(array)
            if had_alpha:
                alpha.append(i)
    return arrays, alpha


@contextmanager
def strict_decoding() -> Iterator[None]:
    """Pillow's warnings of damage raised as errors, for `decode_bytes` to refuse."""
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow warns of a decompression bomb below the size where it refuses one, and of damage
        # it skips over (tags, EXIF data) that may change the pixels: refuse all of these.
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode_image(path: Path, size: tuple[int, ...] | None, budget: int) -> tuple[np.ndarray, bool]:
    """One image file as C x H x W uint8 (1 or 3 channels), resized to `size` (H, W) if given,
    and whether an alpha channel was dropped."""
    return decode_bytes(read_bytes(path, "an image file", FILE_LIMIT), path, size, budget)


def decode_bytes(
    raw: bytes, where: Path | str, size: tuple[int, ...] | None, budget: int
) -> tuple[np.ndarray, bool]:
    """The encoded image `raw` as `decode_image` decodes a file; `where` names it in errors.
    Call it under `strict_decoding` so that damage Pillow only warns of is refused."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(raw))
        _require_one_frame(image, where)
        width, height = image.size
        if width * height * len(image.getbands()) > budget:
            raise too_large(where, f"the decoded image ({width}x{height})", budget)
        image.load()
        return _pixels(image, where, size, budget)
    except VaelabError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VaelabError(
            f"{where}: more than the {Image.MAX_IMAGE_PIXELS:,} pixels Pillow decodes in one "
            "image (a decompression bomb?)"
        ) from None
    except Image.UnidentifiedImageError:
        raise VaelabError(
            f"{where}: not an image Pillow can read (corrupt, or another type of file)"
        ) from None
    except Exception as exc:  # a decoder given untrusted bytes may raise anything
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise VaelabError(f"{where}: cannot decode the image ({reason})") from None


def _require_one_frame(image: PILImage.Image, where: Path | str) -> None:
    """Refuse an animation or a multi-page file (GIF, APNG, TIFF, WebP): only its first frame
    would be read, the others passed over without a word."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise VaelabError(
            f"{where}: holds {frames} frames (an animation or a multi-page file), and vaelab "
            "reads one image per file; save the frames wanted as files of their own"
        )


def pil_pixels(image: PILImage.Image, where: str) -> np.ndarray:
    """A PIL image as C x H x W uint8 (1 or 3 channels), converted as image files are."""
    array, _ = _pixels(image, Path(where), None, read_limit(FILE_LIMIT))
    return array


def _pixels(
    image: PILImage.Image, path: Path | str, size: tuple[int, ...] | None, budget: int
) -> tuple[np.ndarray, bool]:
    from PIL import Image

    mode = image.mode
    alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        mode == "P" and "transparency" in image.info
    )
    if mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8))
    elif mode == "P" and alpha:
        image = image.convert("RGBA").convert("RGB")
    elif mode in _TO_RGB:
        image = image.convert("RGB")
    elif mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif mode not in ("L", "RGB"):
        raise VaelabError(
            f"{path}: pixels of mode {mode} (32-bit integer or float, range unknown); vaelab "
            "reads 8- and 16-bit images: save it as 8-bit greyscale or RGB"
        )
    if size is not None and image.size != (size[1], size[0]):
        resized = size[0] * size[1] * len(image.getbands())
        if resized > budget:  # before Pillow allocates it
            raise too_large(path, f"the image resized to {size[0]}x{size[1]}", budget)
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array), alpha


def check_alike(files: tuple[Path, ...], arrays: list[np.ndarray], root: Path) -> None:
    """One size and one channel count for all images, or one line naming what differs."""
    check_shapes(files, [array.shape for array in arrays], root)


def check_shapes(files: tuple[Path, ...], shapes: list[tuple[int, ...]], root: Path) -> None:
    """One size and one channel count for the images of `shapes` (C x H x W, one per file), or
    one line naming what differs."""
    sizes = Counter(shape[1:] for shape in shapes)
    if len(sizes) > 1:
        found = ", ".join(
            f"{h}x{w} ({count}, e.g. {_first(files, shapes, lambda a, s=(h, w): a[1:] == s)})"
            for (h, w), count in sizes.most_common(3)
        ) + (f" and {len(sizes) - 3} more" if len(sizes) > 3 else "")
        raise VaelabError(
            f"{root}: images of {len(sizes)} sizes (H x W): {found}; give image_size to resize "
            "them all to one",
            parameters=("image_size",),
        )
    channels = Counter(shape[0] for shape in shapes)
    if len(channels) > 1:
        found = ", ".join(
            f"{'grey' if c == 1 else 'RGB'} ({count}, e.g. "
            f"{_first(files, shapes, lambda a, c=c: a[0] == c)})"
            for c, count in sorted(channels.items())
        )
        raise VaelabError(
            f"{root}: both greyscale and colour images: {found}; convert them to one mode "
            "(all greyscale or all RGB)"
        )


def _first(files: tuple[Path, ...], shapes: list[tuple[int, ...]], match: Any) -> Path:
    return next(path for path, shape in zip(files, shapes) if match(shape))
