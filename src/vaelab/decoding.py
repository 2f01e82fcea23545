"""The memory of decoding many latent codes at once, checked before any of it is allocated.

Decoding `count` codes (`vaelab sample --n`, the manifold figure's grid, `vaelab.decode` of the
user's codes) keeps every decoded image until the last batch is done: the batches' outputs and
their concatenation, float32, two copies of count x C x H x W values, and the writer's copy of
them (a PNG grid or a .npy array) on top. One batch's activations (every decoder layer's output,
measured on one code by `vaelab.evaluation`) come with them. `require_decoding_memory` refuses in
one line, with the figures and the option that sets the count, a request that does not fit in the
memory the process has free, so that it never fails inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaelab._bounds import require_whole
from vaelab._io import size_words
from vaelab._resources import available_memory, not_enough
from vaelab.errors import VaelabError
from vaelab.evaluation import _decoder_floats
from vaelab.models import VAE, evaluating

FP32 = 4
# Copies of the decoded images alive at once: the batches' outputs, their concatenation, and the
# copy the caller makes of them (a PNG grid, a figure's tiles, an array written to a file).
OUTPUT_COPIES = 3


def decoding_bytes(model: VAE, count: int, batch_size: int) -> int:
    """Bytes decoding `count` codes of `model` in batches of `batch_size` needs at its peak."""
    return _output_bytes(model, count) + _batch_bytes(model, min(count, batch_size))


def require_decoding_memory(
    model: VAE, count: int, batch_size: int, parameters: Sequence[str]
) -> None:
    """Refuse, in one line naming `parameters` (the API's words for what sets `count`), decoding
    `count` images that would not fit in the memory this process can still allocate."""
    require_whole("batch_size", batch_size, 1)
    available = available_memory()
    if available is None:
        return
    needed = _output_bytes(model, count)
    if needed <= available:  # the probe of one code runs only when the images themselves fit
        needed += _batch_bytes(model, min(count, batch_size))
    if needed <= available:
        return
    channels, height, width = model.config.shape
    each = size_words(model.config.input_dim * FP32)
    refusal = not_enough(
        f"decoding {count:,} images of {channels}x{height}x{width} ({each} each)",
        needed,
        available,
        "memory",
    )
    names = " or ".join(parameters)
    raise VaelabError(f"{refusal}; ask for fewer images with {names}", parameters=parameters)


def _output_bytes(model: VAE, count: int) -> int:
    """The decoded images' copies alive at once (OUTPUT_COPIES of count x C x H x W float32)."""
    return count * model.config.input_dim * FP32 * OUTPUT_COPIES


def _batch_bytes(model: VAE, rows: int) -> int:
    """One batch of `rows` codes' activations: every decoder layer's output, measured on one."""
    element = next(model.parameters()).element_size()
    with torch.no_grad(), evaluating(model):
        return max(rows, 0) * element * _decoder_floats(model)
