"""The two file formats a part leaves in: ONNX (run by onnxruntime) and TorchScript (torch.jit).

Each format turns a part into bytes, and loads those bytes back as a runner: a function from an
input batch to the part's outputs as NumPy arrays, which the export compares with PyTorch's.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab._extras import require_extra
from vaelab.errors import VaelabError
from vaelab.export.parts import BATCH, Part

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
# What the ONNX path imports. torch.onnx.export's default since torch 2.9 is the exporter built
# on torch.export, which writes ONNX through onnxscript; it runs offline, handles a free batch
# dimension by symbolic shapes, and knows every operator vaelab's decoders use. The older
# TorchScript-based exporter (dynamo=False) is deprecated, slated for removal, and has no
# `expm1`, so it cannot export the continuous Bernoulli's mean at all.
ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")

Runner = Callable[[torch.Tensor], list[np.ndarray]]


def check_format(format: str) -> None:
    """Refuse a format other than 'onnx' and 'torchscript'."""
    if format not in FORMATS:
        raise VaelabError(
            f"format must be one of {', '.join(FORMATS)}, got {format!r}", parameters=("format",)
        )


def require_format(format: str) -> None:
    """Raise MissingExtra unless what `format` needs is installed (TorchScript needs only torch)."""
    if format == "onnx":
        require_extra("export", *ONNX_MODULES)


def serialize(part: Part, format: str, example: torch.Tensor) -> bytes:
    """The bytes of `part` in `format`, traced or exported with the input batch `example`."""
    with _quiet():
        if format == "onnx":
            return _onnx_bytes(part, example)
        return _torchscript_bytes(part, example)


def load_runner(path: Path, format: str) -> Runner:
    """The file at `path` loaded by its own runtime: onnxruntime, or torch.jit.load."""
    with _quiet():
        if format == "onnx":
            return _onnx_runner(path)
        return _torchscript_runner(path)


def onnx_opset(path: Path) -> int:
    """The default-domain opset an ONNX file was written for."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' own chatter (deprecation notices, skipped torchvision ops) so the
    command prints only its own lines; their errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx_bytes(part: Part, example: torch.Tensor) -> bytes:
    import onnx

    try:
        program = torch.onnx.export(
            part.module, (example,), None, dynamo=True, verbose=False,
            input_names=[t.name for t in part.inputs],
            output_names=[t.name for t in part.outputs],
            dynamic_shapes=({0: torch.export.Dim(BATCH)},),
        )  # fmt: skip
    except Exception as exc:  # the exporter's many error types; vaelab's own models never hit one
        raise VaelabError(
            f"the ONNX exporter could not export the {part.name}: {_first(exc)}"
        ) from None
    if program is None:  # only an exporter writing to a file returns nothing
        raise VaelabError(f"the ONNX exporter returned no model for the {part.name}")
    proto = program.model_proto
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    runtime = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = runtime.get_inputs()[0].name

    def run(batch: torch.Tensor) -> list[np.ndarray]:
        return [np.asarray(out) for out in runtime.run(None, {name: batch.numpy()})]

    return run


def _torchscript_bytes(part: Part, example: torch.Tensor) -> bytes:
    # Traced, not scripted: the trace records the batch size as the input's size, so any batch
    # runs, and the model code needs no TorchScript annotations.
    traced = torch.jit.trace(part.module, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _torchscript_runner(path: Path) -> Runner:
    module = torch.jit.load(str(path), map_location="cpu")

    def run(batch: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in as_tuple(module(batch))]

    return run


def as_tuple(value: Any) -> tuple[torch.Tensor, ...]:
    """A part's output as a tuple of tensors (the decoder returns one tensor)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
