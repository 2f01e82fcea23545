"""Pixels as vaelab reads them: uint8 (0-255), uint16 (0-65535), bool, or floats in [0, 1],
held as they are stored and made float32 in [0, 1] one batch at a time."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from vaelab._io import MiB
from vaelab._resources import require_memory
from vaelab.errors import VaelabError

PIXEL_SCALES = {torch.uint8: 255.0, torch.uint16: 65535.0}
PIXEL_TYPES = "uint8 (0-255), uint16 (0-65535), bool, or floats in [0, 1]"
FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CHECK_GATHER_BYTES = 64 * MiB  # gathers at least this large are checked against free memory
# Integer pixels are looked at in three runs of consecutive images (the set's start, middle and
# end), at most this many images and bytes in all: enough to see the scale they are stored in,
# and three sequential reads of a mapped file (images spread over it would each cost a seek).
_SAMPLE_IMAGES = 4096
_SAMPLE_BYTES = 16 * MiB
# Integer pixels whose largest value is under this part of their type's full scale are told of.
_NARROW_PART = 8


def unit_float(stored: torch.Tensor) -> torch.Tensor:
    """Stored pixels as float32 in [0, 1]: uint8 / 255, uint16 / 65535, bool as 0 or 1, floats
    as they are."""
    scale = PIXEL_SCALES.get(stored.dtype)
    if scale is not None:
        return stored.to(torch.float32).div_(scale)
    return stored.to(torch.float32)


def pixel_storage(values: np.ndarray | torch.Tensor, where: str) -> torch.Tensor:
    """`values` as a tensor sharing their memory (a mapped file stays mapped), refused in one line
    naming `where` unless it holds pixels of a type vaelab reads."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach() if values.requires_grad else values
    else:
        array = np.asarray(values)
        if array.dtype.hasobject:
            raise VaelabError(f"{where}: holds Python objects, not pixels")
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and array.itemsize > 8):
            raise VaelabError(f"{where}: holds values of type {array.dtype}, not pixels")
        if not array.dtype.isnative:
            require_gather_memory(array.nbytes, where)
            array = array.astype(array.dtype.newbyteorder("="))  # torch reads native order only
        with warnings.catch_warnings():  # a read-only mapping: vaelab never writes through it
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(array)
    if tensor.is_complex():
        raise VaelabError(f"{where}: holds complex numbers, not pixels")
    if tensor.dtype not in (*PIXEL_SCALES, torch.bool, *FLOAT_TYPES):
        raise VaelabError(
            f"{where}: pixels of type {str(tensor.dtype).removeprefix('torch.')} are not "
            f"intensities; give {PIXEL_TYPES}",
            parameters=(where,),
        )
    return tensor


def require_gather_memory(nbytes: int, where: str) -> None:
    """Refuse in one line naming `where` a read of `nbytes` into memory that memory cannot hold."""
    if nbytes >= _CHECK_GATHER_BYTES:
        require_memory(nbytes, f"{where}: reading {nbytes // MiB:,} MiB of images into memory")


def check_unit_range(low: float, high: float, where: str) -> None:
    """Refuse in one line naming `where` pixels whose min `low` and max `high` leave [0, 1]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise VaelabError(f"{where}: pixels hold NaN or infinite values", parameters=(where,))
    if low < 0.0 or high > 1.0:
        raise VaelabError(
            f"{where}: pixel values must lie in [0, 1], found min {low:.4g} and max {high:.4g}; "
            f"{range_hint(low, high)}",
            parameters=(where,),
        )


def narrow_range_note(pixels: torch.Tensor, where: str) -> str | None:
    """A note for integer pixels (N x ...) whose largest value is under an eighth of their
    type's full scale, or None: read as value / 255 (or / 65535) they would make nearly black
    images without a word. The largest value is that of the images at the set's start, middle
    and end (up to 4,096 and 16 MiB in all), so a file mapped from disk is read in three
    sequential runs, not in full."""
    scale = PIXEL_SCALES.get(pixels.dtype)
    count = int(pixels.shape[0]) if pixels.ndim else 0
    if scale is None or count == 0 or pixels[0].numel() == 0:
        return None
    per_image = pixels[0].numel() * pixels.element_size()
    run = max(1, min(_SAMPLE_IMAGES, _SAMPLE_BYTES // per_image) // 3)
    starts = (0,) if count <= 3 * run else (0, (count - run) // 2, count - run)
    length = count if len(starts) == 1 else run
    # NumPy: torch has no max of uint16
    peak = max(int(pixels[start : start + length].numpy().max()) for start in starts)
    if peak * _NARROW_PART >= scale:
        return None
    kind = str(pixels.dtype).removeprefix("torch.")
    looked = length * len(starts)
    sampled = "" if looked == count else f" (in {looked:,} images at its start, middle and end)"
    read_as = f"read as values up to {peak / scale:.2g}, nearly black"
    if peak <= 1:
        fix = "0/1 images? give them as bool, or as floats in [0, 1]"
    else:
        fix = (
            f"if {peak} is their full scale (16 in scikit-learn's digits, 4095 for 12-bit data), "
            f"divide by it and give floats in [0, 1]"
        )
    return f"{where}: {kind} pixels reach at most {peak} of {scale:.0f}{sampled}, {read_as}; {fix}"


def range_hint(low: float, high: float) -> str:
    """How to bring pixels found in [`low`, `high`] into [0, 1], for the range they look like.

    The fix follows the scale the values seem stored in: a maximum of 16 is not 8-bit data, and
    dividing it by 255 would train on pixels below 0.07 without a word.
    """
    if low < 0.0:
        if low >= -1.0 and high <= 1.0:
            return "values in [-1, 1]? map them to [0, 1] with (x + 1) / 2"
        return "standardised values? give the pixels before normalisation, scaled to [0, 1]"
    if high < 2.0:
        return "values just above 1 (rounding)? clip them to [0, 1]"
    if high <= 255.0:
        if high > 127.0:
            return "0-255 values? give them as uint8, or divide by 255"
        return (
            f"values 0-{high:.4g} (e.g. 0-16 in scikit-learn's digits)? divide by their own "
            f"maximum ({high:.4g}), not by 255, which would leave every pixel below "
            f"{high / 255:.2g}"
        )
    if high <= 65535.0:
        return (
            "16-bit values? give them as uint16, or divide by 65535 (or by their own full "
            "scale, e.g. 4095 for 12-bit data)"
        )
    return "divide them by their full scale to bring them into [0, 1]"
